"""Trainable parameters of the paper preset's LoRA (rank 32, only B, q/k/v + first MLP layer, both towers) on the
standard size of every tower family: the README's table (`python benchmarks/lora_counts.py`).

Models are built on the meta device (shapes, no weights: seconds each, no memory, no download), LoRA applied by
peft through segpcl's own placement, and the trainable parameters counted per tower.
"""

from __future__ import annotations

import torch

ARCHS = [
    "ViT-B-16", "ViT-L-14", "ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-SO400M-14-SigLIP", "EVA02-B-16", "EVA02-L-14",
    "PE-Core-B-16", "PE-Core-L-14-336", "MobileCLIP-S2", "MobileCLIP2-S4", "MobileCLIP-B", "RN50", "RN101",
]  # fmt: skip


def paper_lora_counts(arch: str) -> dict:
    """Family, trainable LoRA parameters per tower, raw visual width and logit form of `arch` (meta device)."""
    import open_clip

    from segpcl.config import LoraSection
    from segpcl.models.clip import ClipModel
    from segpcl.models.families import sigmoid_trained
    from segpcl.models.lora import apply_lora

    with torch.device("meta"):
        model = ClipModel(open_clip.create_model(arch, pretrained=None, device="meta"), None, 224)
        apply_lora(model, LoraSection())
    counts = {"visual": 0, "text": 0}
    for name, p in model.clip.named_parameters():
        if p.requires_grad:
            counts["visual" if ".visual." in name else "text"] += p.numel()
    return {
        "arch": arch,
        "family": model.visual_family.name,
        **counts,
        "total": counts["visual"] + counts["text"],
        "raw_dim": model.raw_dim,
        "logits": "s·cos + b (sigmoid)" if sigmoid_trained(model.base) else "s·cos",
    }


if __name__ == "__main__":
    print("| model | family | visual | text | total | raw width | trained logits |")
    print("|---|---|---|---|---|---|---|")
    for arch in ARCHS:
        r = paper_lora_counts(arch)
        print(
            f"| {arch} | {r['family']} | {r['visual']:,} | {r['text']:,} | **{r['total']:,}** | {r['raw_dim']} "
            f"| {r['logits']} |"
        )
