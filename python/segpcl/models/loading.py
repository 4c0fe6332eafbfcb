"""`load_clip`: an open_clip model from a named architecture and local weights, wrapped as `ClipModel`.

Weights never come from the network: `pretrained` is None (random init, or the toy CLIP's own pretraining),
a local file, or an open_clip tag resolved offline from the local open_clip/HF cache.
Accepted files: a state dict (.bin/.pt/.pth), .safetensors, an open_clip training checkpoint
(`{"state_dict": {"module.…": …}}`), or OpenAI's TorchScript .pt. Pickled files are read with
`torch.load(weights_only=True)`, which refuses arbitrary Python objects. A TorchScript archive is not
given to `torch.jit.load` (which runs the scripted modules' `__setstate__`, code that comes with the file):
its tensors are read from the archive without running anything (models/torchscript.py).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path

import torch

from ..errors import ConfigError, WeightsError
from .clip import ClipModel
from .tiny import build_tiny, is_tiny
from .tokenizer import load_tokenizer

_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, whole (messages of hub and pickle errors run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _hub_offline():
    """Resolve tags from the local cache only: huggingface_hub reads HF_HUB_OFFLINE once at import, so the
    module constant is patched for the call."""
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict, came from a TorchScript archive)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), False
        except Exception as exc:
            raise WeightsError(
                f"{path} is not a readable safetensors file ({exc}); re-download or re-export it"
            ) from exc
    is_torchscript = False
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_torchscript = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    try:
        if is_torchscript:
            from .torchscript import read_torchscript_tensors

            return read_torchscript_tensors(path), True
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"could not read weights file {path} ({type(exc).__name__}: {_first_line(exc)}); "
            "expected an open_clip/PyTorch state dict, a .safetensors file, an open_clip checkpoint or "
            "OpenAI's TorchScript .pt"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no state dict of tensors; expected a CLIP weights file")
    return obj, False


def _clean_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Strip DDP prefixes and OpenAI's metadata entries; report whether keys look like OpenAI's release."""
    looks_openai = any(k in sd for k in _OPENAI_EXTRA_KEYS)
    out = {}
    for k, v in sd.items():
        if k in _OPENAI_EXTRA_KEYS:
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out, looks_openai


def _load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or shape:
        parts = []
        if shape:
            k = shape[0]
            parts.append(
                f"{len(shape)} shape mismatches (e.g. {k}: file {tuple(sd[k].shape)}, {arch} {tuple(own[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        raise WeightsError(
            f"weights in {path} do not fit architecture {arch!r}: " + "; ".join(parts) + ". "
            "Pass the --model that these weights were trained with."
        )
    model.load_state_dict(sd, strict=True)


def load_clip(
    arch: str,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tokenizer: str | os.PathLike | None = None,
) -> ClipModel:
    """Build `arch` (an open_clip name, or a tiny config such as `toy-clip`) and load `pretrained` into it;
    `tokenizer`: a local tokenizer folder, for models whose tokenizer comes from a hub (models/tokenizer.py)."""
    import open_clip

    if arch == "toy-clip" and pretrained is None and tokenizer is None:
        from .toy.clip import pretrained_toy_clip

        return pretrained_toy_clip().to(device)

    if is_tiny(arch):
        clip, tokenizer, image_size = build_tiny(arch, tokenizer, pretrained)
        mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    else:
        if arch not in open_clip.list_models():
            raise ConfigError(f"unknown architecture {arch!r}; see open_clip.list_models() (e.g. ViT-L-14-quickgelu)")
        path = Path(pretrained) if pretrained is not None else None
        tag = str(pretrained) if pretrained is not None and not (path.exists() or path.suffix) else None
        text_cfg = open_clip.get_model_config(arch)["text_cfg"]  # the tokenizer first: its error costs no build
        tokenizer = load_tokenizer(arch, text_cfg, tokenizer, None if tag is not None else pretrained)
        if tag is not None:
            try:
                with _hub_offline():
                    clip = open_clip.create_model(arch, pretrained=tag, device="cpu", precision="fp32")
            except Exception as exc:
                raise WeightsError(
                    f"pretrained tag {tag!r} for {arch} is not in the local open_clip/HF cache ({_first_line(exc)}); "
                    "segpcl never downloads: pass a local weights file with --pretrained FILE"
                ) from exc
        else:
            clip = open_clip.create_model(arch, pretrained=None, device="cpu", precision="fp32")
        pp = clip.visual.preprocess_cfg if hasattr(clip.visual, "preprocess_cfg") else {}
        mean = pp.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pp.get("std", open_clip.OPENAI_DATASET_STD)
        size = clip.visual.image_size
        image_size = size[0] if isinstance(size, tuple | list) else int(size)
        pretrained = None if tag is not None else pretrained

    if pretrained is not None:
        path = Path(pretrained)
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist; pass the path of a local CLIP weights file")
        sd, from_torchscript = _read_state_dict(path)
        sd, looks_openai = _clean_keys(sd)
        if (looks_openai or from_torchscript) and "quickgelu" not in arch.lower():
            fix = (
                f"use --model {arch}-quickgelu"
                if f"{arch}-quickgelu" in open_clip.list_models()
                else "pass the open_clip QuickGELU architecture these weights were made for (e.g. --model "
                "ViT-B-16-quickgelu; open_clip.list_models() lists them)"
            )
            raise WeightsError(
                f"{path} looks like OpenAI's CLIP release, which uses QuickGELU, but {arch!r} is not a QuickGELU "
                f"architecture: {fix}"
            )
        _load_into(clip, sd, path, arch)

    model = ClipModel(clip, tokenizer, image_size, mean=mean, std=std)
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be fp32 or bf16 (autocast), got {precision!r}")
    return model.to(device)
