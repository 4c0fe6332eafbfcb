"""Tiny open_clip CLIP configurations built in code (no weights, no download): the toy CLIP and test models,
one of each tower family (models/families.py) in open_clip's own config layout, reduced."""

from __future__ import annotations

from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

from .tokenizer import load_tokenizer

_TEXT = dict(context_length=16, width=32, heads=2, layers=1)

TINY_CONFIGS: dict[str, dict] = {
    # The toy world's CLIP, pretrained by segpcl itself (models/toy/).
    "toy-clip": dict(
        embed_dim=64,
        vision=dict(layers=4, width=128, head_width=32, patch_size=8, image_size=32),
        text=dict(context_length=16, width=64, heads=2, layers=2),
    ),
    # A minimal model for tests and CPU cost measurements.
    "tiny": dict(
        embed_dim=32,
        vision=dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
        text=dict(context_length=16, width=32, heads=2, layers=1),
    ),
    # One per tower family, for tests: the same towers as the named open_clip models, reduced.
    "tiny-siglip": dict(  # ViT-B-16-SigLIP: timm ViT with MAP pooling, sigmoid logit bias, a hub tokenizer
        embed_dim=64,
        custom_text=True,
        init_logit_bias=-10.0,
        vision=dict(timm_model_name="segpcl_tiny_siglip_vit", timm_pool="map", timm_proj="none", image_size=32),
        text=dict(
            _TEXT,
            vocab_size=32000,
            hf_tokenizer_name="timm/ViT-B-16-SigLIP",
            tokenizer_kwargs={"clean": "canonicalize"},
            no_causal_mask=True,
            proj_bias=True,
            pool_type="last",
            norm_kwargs={"eps": 1e-6},
        ),
    ),  # fmt: skip
    "tiny-eva02": dict(  # EVA02-B-16
        embed_dim=32,
        custom_text=True,
        vision=dict(timm_model_name="segpcl_tiny_eva02", timm_pool="token", timm_proj=None, image_size=32),
        text=_TEXT,
    ),
    "tiny-pe-core": dict(  # PE-Core-B-16
        embed_dim=32,
        custom_text=True,
        vision=dict(timm_model_name="segpcl_tiny_pe_core", timm_pool="map", timm_proj=None, image_size=32),
        text=_TEXT,
    ),
    "tiny-mobileclip": dict(  # MobileCLIP-S1 / MobileCLIP2-S0: FastViT (64 px: a 2 x 2 grid in its attention stage)
        embed_dim=32,
        custom_text=True,
        vision=dict(timm_model_name="segpcl_tiny_fastvit_mci", timm_pool="avg", timm_proj=None, image_size=64),
        text=dict(_TEXT, no_causal_mask=True),
    ),
    "tiny-rn": dict(  # RN50: ModifiedResNet with its attention pool
        embed_dim=32,
        vision=dict(layers=[1, 1, 1, 1], width=8, head_width=64, image_size=32),
        text=_TEXT,
    ),
}


def is_tiny(arch: str) -> bool:
    return arch in TINY_CONFIGS


def build_tiny(arch: str, tokenizer: str | None = None, pretrained: str | None = None) -> tuple[CLIP, object, int]:
    """A randomly initialised tiny CLIP, its tokenizer and its image size (`tokenizer`, `pretrained`: where a hub
    tokenizer's files are, see models/tokenizer.py)."""
    cfg = TINY_CONFIGS[arch]
    if "timm_model_name" in cfg["vision"]:
        from . import tiny_timm  # noqa: F401  (registers the reduced timm towers)
    vision = CLIPVisionCfg(**cfg["vision"])
    text = CLIPTextCfg(**{"vocab_size": 49408, **cfg["text"]})
    cls = CustomTextCLIP if cfg.get("custom_text") else CLIP
    model = cls(
        embed_dim=cfg["embed_dim"], vision_cfg=vision, text_cfg=text, init_logit_bias=cfg.get("init_logit_bias")
    )
    return model, load_tokenizer(arch, cfg["text"], tokenizer, pretrained), cfg["vision"]["image_size"]
