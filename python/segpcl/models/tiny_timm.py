"""Reduced timm towers of the families open_clip builds through timm (SigLIP's ViT, EVA02, PE-Core, MobileCLIP's
FastViT), registered with timm under `segpcl_tiny_*` so that open_clip's TimmModel builds them by name, as it
builds the full ones. Same timm classes and module layout as the real towers; widths, depths and image sizes
cut so that tests train them on the CPU in seconds. Imported only when a tiny config names one (models/tiny.py).
"""

from __future__ import annotations

import timm
from timm.models import register_model

_SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)


@register_model
def segpcl_tiny_siglip_vit(pretrained: bool = False, **kwargs):
    """vit_base_patch16_siglip_224 (SigLIP / SigLIP2's image tower: MAP pooling, no projection), reduced."""
    return timm.create_model("vit_base_patch16_siglip_224", pretrained=False, **{**_SMALL, **kwargs})


@register_model
def segpcl_tiny_eva02(pretrained: bool = False, **kwargs):
    """eva02_base_patch16_clip_224 (separate q/k/v, SwiGLU MLP, rotary embeddings), reduced."""
    return timm.create_model(
        "eva02_base_patch16_clip_224", pretrained=False, ref_feat_shape=(4, 4), **{**_SMALL, **kwargs}
    )


@register_model
def segpcl_tiny_pe_core(pretrained: bool = False, **kwargs):
    """vit_pe_core_base_patch16_224 (PE-Core: timm's Eva with fused qkv and an attention pool), reduced."""
    small = dict(ref_feat_shape=(4, 4), attn_pool_num_heads=2)
    return timm.create_model("vit_pe_core_base_patch16_224", pretrained=False, **{**_SMALL, **small, **kwargs})


@register_model
def segpcl_tiny_fastvit_mci(pretrained: bool = False, **kwargs):
    """fastvit_mci0 (MobileCLIP's image tower: RepMixer stages, then an attention stage), one block a stage."""
    small = dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 64))
    return timm.create_model("fastvit_mci0", pretrained=False, **{**small, **kwargs})
