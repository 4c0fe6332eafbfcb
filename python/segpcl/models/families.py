"""The tower families segpcl trains: one row per family (FAMILIES), read by LoRA placement (models/lora.py)
and the raw visual feature (models/clip.py); benchmarks/lora_counts.py counts the README's table from it.

Each row says how to recognise the tower, where the paper's LoRA goes in it, and what its "raw" visual feature
is. LoRA targets are written in open_clip's own block vocabulary (`attn.in_proj` = q/k/v, `attn.out_proj`,
`mlp.c_fc` = the first MLP layer, `mlp.c_proj`); `roles` translates them into each family's module names inside
a block. A block gets LoRA only if it has attention (a q/k/v module): MobileCLIP's FastViT keeps its
convolutional RepMixer blocks frozen, as the paper adapts transformer blocks. A tower no row recognises, or a
target a block lacks, is a ConfigError naming the modules found: never a LoRA on fewer layers than asked (a
family without such a layer at all, the MLP of a ResNet's attention pool, says so in its row with `()`).

Logits. Every family classifies by softmax over the classes of s * cos(f, T_c). A sigmoid-trained model
(SigLIP, SigLIP2: `logit_bias` is set) was trained on s * cos + b; b is the same for every class, so the
softmax over classes (CE, ACGD's KL, the dual path) is unchanged by it and segpcl leaves it out. s is the
model's own exp(logit_scale): capped at 100 only for softmax-trained models (open_clip's cap in CLIP
training, so a no-op for their weights); SigLIP's learned s (about 110) is used as trained.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

OPEN_CLIP_TARGETS = ("attn.in_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")


@dataclass(frozen=True)
class Family:
    name: str
    examples: str
    """open_clip architectures of this family (the README's table)."""
    tower: str
    """visual or text."""
    recognise: Callable[[nn.Module], bool]
    """Called on the tower module (clip.visual, or the text tower)."""
    blocks: str
    """Regex of the blocks' names inside the tower."""
    roles: dict[str, tuple[str, ...]] | None
    """open_clip target -> this family's modules in a block (several: q, k and v apart; () = none: the family
    has no such layer, and the target is skipped in this tower). None: open_clip's own names, any suffix."""
    raw: str = ""
    """What the raw visual feature is (visual rows)."""
    raw_kind: str = ""
    """How it is computed: vit_proj, timm or resnet_pool (see raw_and_embedding)."""
    notes: str = ""


def _is(module_path: str, cls: str) -> Callable[[nn.Module], bool]:
    def check(tower: nn.Module) -> bool:
        import importlib

        return isinstance(tower, getattr(importlib.import_module(module_path), cls))

    return check


def _timm(cls_module: str, cls: str) -> Callable[[nn.Module], bool]:
    trunk = _is(cls_module, cls)
    timm_model = _is("open_clip.timm_model", "TimmModel")

    def check(tower: nn.Module) -> bool:
        # an attention-pool head of open_clip's own (abs_attn/rot_attn) would leave the trunk's pre-logits unpooled
        return timm_model(tower) and trunk(tower.trunk) and not hasattr(tower.head, "pool")

    return check


_TIMM_RAW = "the trunk's pre-logits (pooled, after fc_norm), before the trunk's head and open_clip's projection"

FAMILIES: tuple[Family, ...] = (
    Family(
        name="open_clip ViT",
        examples="ViT-B-16, ViT-L-14(-quickgelu), ViT-H-14, ViT-bigG-14, CLIPA, worldwide",
        tower="visual",
        recognise=_is("open_clip.transformer", "VisionTransformer"),
        blocks=r"transformer\.resblocks\.\d+",
        roles=None,
        raw="the pooled token after ln_post, before `proj`",
        raw_kind="vit_proj",
    ),
    Family(
        name="timm ViT",
        examples="ViT-B-16-SigLIP, ViT-B-16-SigLIP2, ViT-SO400M-14-SigLIP, MobileCLIP-B, MobileCLIP2-L-14",
        tower="visual",
        recognise=_timm("timm.models.vision_transformer", "VisionTransformer"),
        blocks=r"trunk\.blocks\.\d+",
        roles={
            "attn.in_proj": ("attn.qkv",),
            "attn.out_proj": ("attn.proj",),
            "mlp.c_fc": ("mlp.fc1", "mlp.w0", "mlp.w1"),  # w0, w1: ViTamin's GeGLU
            "mlp.c_proj": ("mlp.fc2", "mlp.w2"),
        },
        raw=_TIMM_RAW + " (SigLIP: the MAP-pooled embedding; it has no projection)",
        raw_kind="timm",
    ),
    Family(
        name="timm EVA",
        examples="EVA02-B-16, EVA02-L-14, EVA01-g-14, PE-Core-B-16, PE-Core-L-14-336",
        tower="visual",
        recognise=_timm("timm.models.eva", "Eva"),
        blocks=r"trunk\.blocks\.\d+",
        roles={
            "attn.in_proj": ("attn.qkv", "attn.q_proj", "attn.k_proj", "attn.v_proj"),
            "attn.out_proj": ("attn.proj",),
            "mlp.c_fc": ("mlp.fc1", "mlp.fc1_g", "mlp.fc1_x"),
            "mlp.c_proj": ("mlp.fc2",),
        },
        raw=_TIMM_RAW + " (PE-Core: after its attention pool)",
        raw_kind="timm",
        notes="EVA02: separate q/k/v and a SwiGLU MLP (fc1_g and fc1_x are both its first layer); PE-Core: fused qkv",
    ),
    Family(
        name="MobileCLIP FastViT",
        examples="MobileCLIP-S1, MobileCLIP-S2, MobileCLIP2-S0, MobileCLIP2-S3, MobileCLIP2-S4",
        tower="visual",
        recognise=_timm("timm.models.fastvit", "FastVit"),
        blocks=r"trunk\.stages\.\d+\.blocks\.\d+",
        roles={
            "attn.in_proj": ("token_mixer.qkv",),
            "attn.out_proj": ("token_mixer.proj",),
            "mlp.c_fc": ("mlp.fc1",),
            "mlp.c_proj": ("mlp.fc2",),
        },
        raw="the globally pooled output of final_conv, before the head's fc",
        raw_kind="timm",
        notes="LoRA in the attention stages only (RepMixer blocks have no q/k/v); fc1 is a 1x1 convolution",
    ),
    Family(
        name="ResNet CLIP",
        examples="RN50, RN101, RN50x4, RN50x16, RN50x64",
        tower="visual",
        recognise=_is("open_clip.modified_resnet", "ModifiedResNet"),
        blocks=r"attnpool",
        roles={
            "attn.in_proj": ("q_proj", "k_proj", "v_proj"),
            "attn.out_proj": ("c_proj",),
            "mlp.c_fc": (),
            "mlp.c_proj": (),
        },
        raw="the attention pool's output before c_proj (its projection)",
        raw_kind="resnet_pool",
        notes="its only attention is the final attention pool (no MLP): LoRA on its q/k/v; convolutions stay frozen",
    ),
    Family(
        name="open_clip text transformer",
        examples="every model above",
        tower="text",
        recognise=_is("open_clip.transformer", "Transformer"),
        blocks=r"resblocks\.\d+",
        roles=None,
    ),
)

SUPPORTED = "; ".join(f"{f.name} ({f.examples.split(',')[0]}...)" for f in FAMILIES if f.tower == "visual")


def text_tower(clip: nn.Module) -> tuple[str, nn.Module]:
    """(prefix, module) of the text tower's transformer: CLIP keeps it at the top (`transformer`),
    CustomTextCLIP in `text` (whose `transformer` it is for open_clip's TextTransformer)."""
    text = getattr(clip, "text", None)
    if text is not None:
        inner = getattr(text, "transformer", None)
        return ("text.transformer.", inner) if inner is not None else ("text.", text)
    return "transformer.", clip.transformer


def family_of(tower: nn.Module, kind: str) -> Family | None:
    return next((f for f in FAMILIES if f.tower == kind and f.recognise(tower)), None)


def visual_family(clip: nn.Module) -> Family | None:
    return family_of(clip.visual, "visual")


def sigmoid_trained(clip: nn.Module) -> bool:
    """SigLIP-style models carry a learned logit bias (see the module docstring)."""
    return getattr(clip, "logit_bias", None) is not None


# ----------------------------------------------------------------------------------------- LoRA placement


def _layer_names(tower: nn.Module, limit: int = 6) -> str:
    """The distinct Linear/Conv layer names of a tower, block indices folded (for error messages)."""
    kinds = Counter(
        re.sub(r"\.\d+(?=\.|$)", ".N", n)
        for n, m in tower.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d | nn.MultiheadAttention)
    )
    shown = ", ".join(f"{n} x{c}" for n, c in list(kinds.items())[:limit])
    return shown + (f" and {len(kinds) - limit} more" if len(kinds) > limit else "")


def _block_targets(block: dict[str, nn.Module], family: Family, targets: list[str], where: str) -> list[str]:
    """The modules of one block that get LoRA for `targets` ([] when the block has no attention)."""
    roles = family.roles or {t: (t,) for t in set(targets) | {"attn.in_proj"}}
    if not any(c in block for c in roles["attn.in_proj"]):
        return []
    chosen = []
    for target in targets:
        if target not in roles:
            raise ConfigError(
                f"lora.targets {target!r} has no counterpart in a {family.name} tower; use open_clip's names, "
                f"which segpcl maps onto it: {', '.join(OPEN_CLIP_TARGETS)}"
            )
        found = [c for c in roles[target] if c in block]
        if roles[target] and not found:
            raise ConfigError(
                f"lora.targets {target!r} (here {' or '.join(roles[target])}) matches no layer of {where}, whose "
                f"layers are {', '.join(n for n in block if n)}; change lora.targets"
            )
        chosen += found
    return chosen


def tower_targets(clip: nn.Module, tower: str, targets: list[str]) -> tuple[Family, list[str]]:
    """The tower's family and the full names (in `clip`) of the modules that get LoRA; ConfigError when the
    tower is of no known family or the targets give it no LoRA layer."""
    if tower == "visual":
        prefix, module = "visual.", clip.visual
    else:
        prefix, module = text_tower(clip)
    family = family_of(module, tower)
    if family is None:
        raise ConfigError(
            f"segpcl has no LoRA placement for this {tower} tower ({type(module).__name__}"
            f"{'/' + type(module.trunk).__name__ if hasattr(module, 'trunk') else ''}; its layers: "
            f"{_layer_names(module)}); supported {tower} towers: "
            f"{SUPPORTED if tower == 'visual' else 'open_clip text transformer'}; or leave it frozen with "
            f"lora.towers=[{'text' if tower == 'visual' else 'visual'}]"
        )
    names = []
    pattern = re.compile(family.blocks)
    modules = dict(module.named_modules())
    for block_name in [n for n in modules if pattern.fullmatch(n)]:
        inner = {n: m for n, m in modules[block_name].named_modules()}
        where = f"{prefix}{block_name}"
        names += [f"{where}.{t}" for t in _block_targets(inner, family, targets, where)]
    if not names:
        raise ConfigError(
            f"lora.targets {targets} give the {tower} tower ({family.name}) no LoRA layer; its layers: "
            f"{_layer_names(module)}; add attn.in_proj to lora.targets or drop {tower} from lora.towers"
        )
    return family, names


def lora_plan(clip: nn.Module, towers: list[str], targets: list[str]) -> dict[str, list[str]]:
    """tower -> the full module names that get LoRA (every tower in `towers` gets at least one)."""
    return {tower: tower_targets(clip, tower, targets)[1] for tower in towers}


def predicted_trainable(clip: nn.Module, plan: dict[str, list[str]], rank: int, train_a: bool) -> dict[str, int]:
    """Trainable LoRA parameters per tower from the plan's layer shapes: B is [out, r] (A [r, in], when trained)."""
    modules = dict(clip.named_modules())

    def count(m: nn.Module) -> int:
        out, inp = (m.out_features, m.in_features) if isinstance(m, nn.Linear) else (m.out_channels, m.in_channels)
        return rank * out + (rank * inp if train_a else 0)

    return {tower: sum(count(modules[n]) for n in names) for tower, names in plan.items()}


# ----------------------------------------------------------------------------------------- raw visual feature


@contextlib.contextmanager
def _without_projection(visual: nn.Module):
    """open_clip's ViT skips `pooled @ proj` while `proj` is None: its forward then returns the raw features."""
    proj = visual.proj
    visual.proj = None
    try:
        yield
    finally:
        visual.proj = proj


def raw_dim(visual: nn.Module, family: Family | None) -> int | None:
    """Width of the raw visual features (None: no family, or an open_clip ViT without a projection)."""
    kind = family.raw_kind if family is not None else ""
    if kind == "vit_proj":
        proj = getattr(visual, "proj", None)
        return int(proj.shape[0]) if isinstance(proj, torch.Tensor) else None
    if kind == "timm":
        return int(getattr(visual.trunk, "head_hidden_size", visual.trunk.num_features))
    if kind == "resnet_pool" and hasattr(visual.attnpool, "project"):  # linearized (attention.py)
        return int(visual.attnpool.c_proj.in_features)
    return None


def raw_and_embedding(visual: nn.Module, family: Family, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw fp32, the tower's output computed from that raw) in one forward; x is normalised pixels."""
    if family.raw_kind == "vit_proj":
        with _without_projection(visual):
            raw = visual(x).float()
        return raw, raw @ visual.proj.to(raw.dtype)
    if family.raw_kind == "timm":
        trunk = visual.trunk
        raw = trunk.forward_head(trunk.forward_features(x), pre_logits=True).float()
        return raw, visual.head(trunk.get_classifier()(raw))
    pool = visual.attnpool
    pool.project = False
    try:
        raw = visual(x).float()
    finally:
        pool.project = True
    return raw, pool.c_proj(raw)
