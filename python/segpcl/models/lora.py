"""LoRA on open_clip towers via peft, adapters saved in peft's format, and the frozen merged teacher."""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict

from ..config import LoraSection
from ..errors import ConfigError
from .clip import ClipModel
from .families import lora_plan


def lora_target_regex(model: ClipModel, towers: list[str], targets: list[str]) -> str:
    """A regex matching exactly the modules that get LoRA in the chosen towers (placed per tower family,
    families.py); a tower that would get none is a ConfigError."""
    if not towers or set(towers) - {"visual", "text"}:
        raise ConfigError(f"lora.towers must be a non-empty subset of [visual, text], got {towers}")
    if not targets:
        raise ConfigError("lora.targets is empty; e.g. [attn.in_proj, mlp.c_fc]")
    if "attn" in targets:
        raise ConfigError(
            "lora.targets `attn` names the whole attention module, which segpcl splits into two Linear layers: "
            "target attn.in_proj (q, k, v) and/or attn.out_proj"
        )
    plan = lora_plan(model.base, towers, targets)
    return "^(?:" + "|".join(re.escape(n) for names in plan.values() for n in names) + ")$"


def apply_lora(model: ClipModel, cfg: LoraSection) -> ClipModel:
    """Wrap the open_clip model with peft LoRA; only LoRA parameters stay trainable (only B without train_a)."""
    peft_cfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_target_regex(model, cfg.towers, cfg.targets),
    )
    model.clip = get_peft_model(model.clip, peft_cfg)
    if not cfg.train_a:
        for name, param in model.clip.named_parameters():
            if "lora_A" in name:
                param.requires_grad_(False)
    return model


def lora_parameters(model: ClipModel) -> list[torch.nn.Parameter]:
    return [p for n, p in model.clip.named_parameters() if p.requires_grad and "lora_" in n]


@contextlib.contextmanager
def lora_switched_off(model: ClipModel) -> Iterator[None]:
    """The model without its LoRA (zero-shot CLIP) inside the block. peft's `disable_adapter` marks every adapter
    parameter trainable again when it ends (its `set_adapter`), which would train A under `train_a: false`:
    each parameter's requires_grad is put back as it was."""
    clip = model.clip
    if not hasattr(clip, "disable_adapter"):
        yield
        return
    flags = [(p, p.requires_grad) for p in clip.parameters()]
    try:
        with clip.disable_adapter():
            yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def save_adapter(model: ClipModel, folder: Path) -> None:
    """Save the LoRA adapter in peft's own format (adapter_config.json + adapter_model.safetensors)."""
    if not isinstance(model.clip, PeftModel):
        return
    model.clip.save_pretrained(str(folder))


def load_adapter(model: ClipModel, folder: Path) -> None:
    """Load adapter weights saved by `save_adapter` into a model that already has LoRA applied. Only the
    safetensors file is read (never peft's pickled adapter_model.bin, nor the hub)."""
    from safetensors.torch import load_file

    path = Path(folder) / "adapter_model.safetensors"
    if not path.is_file():
        raise ConfigError(f"{folder} has no adapter_model.safetensors (the LoRA adapter segpcl writes)")
    weights = load_file(str(path), device="cpu")
    result = set_peft_model_state_dict(model.clip, weights)
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(f"adapter in {folder} does not match this model's LoRA layout: {result.unexpected_keys[:3]}")


def frozen_teacher(model: ClipModel) -> ClipModel:
    """A frozen copy of the current model with LoRA merged into the weights (plain open_clip, faster)."""
    teacher = copy.deepcopy(model)
    if isinstance(teacher.clip, PeftModel):
        teacher.clip = teacher.clip.merge_and_unload()
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher
