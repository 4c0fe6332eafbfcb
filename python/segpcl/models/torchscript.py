"""The parameters and buffers of a TorchScript archive (OpenAI's CLIP .pt), read without running its code.

`torch.jit.load` rebuilds the scripted modules and calls their `__setstate__`, which is code the file brings.
Here the archive's `data.pkl` is read by an unpickler that knows only what a module's state holds: the
scripted classes become inert records, tensors are rebuilt from the archive's own `data/<key>` entries,
and any other Python global stops the read. Which attributes are parameters or buffers (the names
`state_dict()` would give) is read from the `__parameters__` / `__buffers__` lines of the archive's code
listing, which is text and is never run.
"""

from __future__ import annotations

import collections
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch

_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_TYPED_LIST_MARKERS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")
_CLASS = re.compile(r"^class (\w+)\(Module\):\n((?:  .*\n|\n)*)", re.MULTILINE)
_NAMES = re.compile(r"^  (__parameters__|__buffers__) = \[(.*)\]$", re.MULTILINE)


class NotReadable(Exception):
    """The archive holds something a module's tensors never need (the message says what)."""


class _Record:
    """A scripted object, inert: its class name and its state as pickled (never a __setstate__ of the file's)."""

    qualname = ""

    def __init__(self, *args):
        self.state = None

    def __setstate__(self, state):
        self.state = state


def _identity(value, *_):
    return value


class _Unpickler(pickle.Unpickler):
    def __init__(self, zf: zipfile.ZipFile, prefix: str, data: bytes):
        import io

        super().__init__(io.BytesIO(data))
        self.zf, self.prefix = zf, prefix
        self.records: dict[str, type] = {}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            key = f"{module}.{name}"
            if key not in self.records:  # one inert class per scripted class
                self.records[key] = type(name, (_Record,), {"qualname": key})
            return self.records[key]
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _TYPED_LIST_MARKERS:
            return _identity  # TorchScript's pickler tags typed lists with these: the value is the list itself
        raise NotReadable(f"it refers to the Python object {module}.{name}, which a module's weights never need")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise NotReadable(f"it refers to {pid!r}, which is not a tensor storage of the archive")
        _, dtype, key, _location, numel = pid
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                raw = bytearray(self.zf.read(name))
            except KeyError:
                raise NotReadable(f"its storage {name} is missing") from None
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() < int(numel):
                raise NotReadable(f"its storage {name} holds {flat.numel()} values, {numel} were written")
            self.storages[key] = flat
        return self.storages[key]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise NotReadable("a tensor in it is not built from one of its storages")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _declared_names(zf: zipfile.ZipFile, prefix: str) -> dict[str, list[str]]:
    """`__torch__.pkg.Class` -> its parameter and buffer names, from the archive's code listing."""
    out: dict[str, list[str]] = {}
    code = f"{prefix}code/"
    for entry in zf.namelist():
        if not (entry.startswith(code) and entry.endswith(".py")):
            continue
        module = entry[len(code) : -len(".py")].replace("/", ".")
        text = zf.read(entry).decode("utf-8", errors="replace")
        for cls in _CLASS.finditer(text):
            names = []
            for _, listed in _NAMES.findall(cls.group(2)):
                names += re.findall(r'"([^"]*)"', listed)
            out[f"{module}.{cls.group(1)}"] = names
    return out


def _collect(obj: _Record, declared: dict[str, list[str]], prefix: str, out: dict, above: set[int]) -> None:
    if id(obj) in above:  # a module tree has no cycles; a forged one must not loop
        raise NotReadable(f"its module {prefix.rstrip('.')} contains itself")
    names = declared.get(obj.qualname)
    if names is None:
        raise NotReadable(f"its code listing does not declare the parameters of {obj.qualname}")
    state = obj.state if isinstance(obj.state, dict) else {}
    for name in names:
        value = state.get(name)
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
    for name, value in state.items():
        if isinstance(value, _Record) and value.qualname in declared:  # a submodule
            _collect(value, declared, f"{prefix}{name}.", out, above | {id(obj)})


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The state dict (parameters and buffers) of the TorchScript module archived at `path`, without running
    any of its code; raises NotReadable (or zipfile/pickle errors) for anything else."""
    with zipfile.ZipFile(path) as zf:
        roots = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(roots) != 1:
            raise NotReadable("it has no single <name>/data.pkl")
        prefix = roots[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in zf.namelist() and zf.read(order).decode(errors="replace").strip() != sys.byteorder:
            raise NotReadable(f"its tensors are {zf.read(order).decode(errors='replace')}-endian")
        declared = _declared_names(zf, prefix)
        root = _Unpickler(zf, prefix, zf.read(roots[0])).load()
        if not isinstance(root, _Record):
            raise NotReadable("its data.pkl does not hold a scripted module")
        out: dict[str, torch.Tensor] = {}
        _collect(root, declared, "", out, set())
    return out
