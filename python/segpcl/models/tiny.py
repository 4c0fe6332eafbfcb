"""Tiny open_clip CLIP configurations built in code (no weights, no download): the toy CLIP and test models."""

from __future__ import annotations

from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer

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
}


def is_tiny(arch: str) -> bool:
    return arch in TINY_CONFIGS


def build_tiny(arch: str) -> tuple[CLIP, SimpleTokenizer, int]:
    """A randomly initialised tiny CLIP, its tokenizer and its image size."""
    cfg = TINY_CONFIGS[arch]
    vision = CLIPVisionCfg(**cfg["vision"])
    text = CLIPTextCfg(vocab_size=49408, **cfg["text"])
    model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=vision, text_cfg=text)
    tokenizer = SimpleTokenizer(context_length=cfg["text"]["context_length"])
    return model, tokenizer, cfg["vision"]["image_size"]
