"""The protocol choices a run names in its config: the class order (`data.class_order`) and the prompt templates
(`data.templates`). Published numbers move with both, so the peers' own choices are selectable by name:

- class order: `seed1993` (PyCIL's permutation, `np.random.seed(1993); permutation(n)`), `rapf` / `mgclip` (the
  order file that RAPF's / MG-CLIP's repository ships for the benchmark, copied into `class_orders/<peer>/` with
  its source in the header), or a FILE of class indices; empty: PyCIL's permutation drawn from
  `data.class_order_seed` (1993 unless set).
- templates: `ensemble` (the benchmark's own ensemble, also when empty), `single` (the one prompt RAPF and
  MG-CLIP use), or a FILE of templates.
A name wins over a file of the same name in the working directory (write `./rapf` for such a file).
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from .base import PYCIL_SEED, Benchmark, pycil_class_order
from .class_files import load_class_order
from .imagenet_r import WNID

PEERS = {"rapf": "RAPF (github.com/linlany/RAPF)", "mgclip": "MG-CLIP (github.com/linlany/MindtheGap)"}
SEED1993 = "seed1993"

SINGLE_TEMPLATE = "a good photo of a {}."
"""`prompt_template` of every class-incremental config in RAPF's and MG-CLIP's repositories."""
TEMPLATE_NAMES = ("ensemble", "single")

# The peers' files number ImageNet-R's classes by their sorted wnid folders (continuum's ImageFolderDataset);
# segpcl sorts its class keys too, which agrees only when those keys are wnids.
_WNID_KEYED = {"imagenet_r"}


def _orders_dir():
    return resources.files(__package__).joinpath("class_orders")


def peer_orders() -> dict[str, list[str]]:
    """peer -> the benchmarks it ships a class order for."""
    root = _orders_dir()
    return {p: sorted(f.name[:-5] for f in root.joinpath(p).iterdir() if f.name.endswith(".yaml")) for p in PEERS}


def _available() -> str:
    listed = "; ".join(f"{p}: {', '.join(b)}" for p, b in peer_orders().items())
    return f"peer orders exist for {listed}; otherwise use {SEED1993} or a FILE of class indices"


def _peer_order(peer: str, bench: Benchmark, bench_name: str) -> list[int]:
    if bench_name not in peer_orders()[peer]:
        raise ConfigError(
            f"data.class_order={peer}: {PEERS[peer]} ships no class order for {bench_name}; {_available()}"
        )
    keys = bench.notes.get("class_keys")
    if bench_name in _WNID_KEYED and keys and not all(WNID.match(k) for k in keys):
        raise ConfigError(
            f"data.class_order={peer} numbers {bench_name}'s classes by their sorted wnids, but this copy's class "
            f"keys are not wnids (such as {keys[0]!r}); use class folders named by wnid, or a FILE of class indices"
        )
    with resources.as_file(_orders_dir().joinpath(peer, f"{bench_name}.yaml")) as path:
        return load_class_order(path, bench.n_classes)


def class_order_for(spec: str | None, bench: Benchmark, bench_name: str, seed: int) -> list[int]:
    """The class order `data.class_order` names (`boundary`, the toy's, is built by the engine)."""
    if not spec:
        return pycil_class_order(bench.n_classes, seed)
    if spec == SEED1993:
        if seed != PYCIL_SEED:
            raise ConfigError(
                f"data.class_order={SEED1993} is PyCIL's permutation with seed {PYCIL_SEED}, but "
                f"data.class_order_seed is {seed}; leave data.class_order empty to draw it from that seed"
            )
        return pycil_class_order(bench.n_classes, PYCIL_SEED)
    if spec in PEERS:
        return _peer_order(spec, bench, bench_name)
    if not Path(spec).expanduser().is_file():
        raise ConfigError(
            f"data.class_order={spec!r} is neither a named order ({SEED1993}, {', '.join(PEERS)}; boundary on the "
            f"toy) nor an existing file; {_available()}"
        )
    return load_class_order(Path(spec), bench.n_classes)


def templates_file(spec: str | None) -> Path | None:
    """The file `data.templates` names; None for `ensemble`, `single` or empty."""
    if not spec or spec in TEMPLATE_NAMES:
        return None
    if not Path(spec).expanduser().is_file():
        raise ConfigError(
            f"data.templates={spec!r} is neither {' nor '.join(TEMPLATE_NAMES)} nor an existing file of templates "
            "(one per line with {})"
        )
    return Path(spec)


def with_templates(bench: Benchmark, spec: str | None) -> Benchmark:
    """`bench` with the peers' single prompt for `single`; unchanged otherwise (a file is read by the builder)."""
    return replace(bench, templates=[SINGLE_TEMPLATE]) if spec == "single" else bench
