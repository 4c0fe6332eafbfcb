"""Prompt-template ensembles per benchmark (a class's text embedding is the renormalised mean over its
templates). Short, CLIP-style ensembles in the spirit of CLIP's own per-data-set prompts, with domain
phrasing for the fine-grained sets. Override any of them with `--templates FILE`."""

from __future__ import annotations

GENERIC_TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "itap of a {}.",
]
"""For any object-recognition set (the zero-shot retention sets, ImageFolder data)."""

CIFAR100_TEMPLATES = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a pixelated photo of a {}.",
    "a photo of the small {}.",
    "a good photo of a {}.",
]

CUB200_TEMPLATES = [
    "a photo of a {}, a type of bird.",
    "a close-up photo of a {}, a type of bird.",
    "a photo of the {}, a type of bird.",
    "a cropped photo of a {}, a type of bird.",
    "a bird photo of a {}.",
]

IMAGENET_R_TEMPLATES = [
    "a photo of a {}.",
    "art of the {}.",
    "a drawing of a {}.",
    "a painting of the {}.",
    "a cartoon {}.",
    "a sketch of a {}.",
    "a sculpture of a {}.",
    "a rendition of the {}.",
]

CARS196_TEMPLATES = [
    "a photo of a {}, a type of car.",
    "a photo of the {}, a type of car.",
    "a photo of a {}.",
    "a photo of my {}.",
    "a photo of my new {}.",
    "a photo of my old {}.",
]

OMNIBENCHMARK_TEMPLATES = [
    "a photo of a {}.",
    "a good photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
]

IMAGENET_SUB_TEMPLATES = [*GENERIC_TEMPLATES, "a good photo of the {}."]
"""A few of CLIP's ImageNet prompts."""

UCF101_TEMPLATES = [
    "a photo of a person doing {}.",
    "a video frame of a person doing {}.",
    "a photo of a person {}.",
    "a frame of a video of {}.",
    "an example of a person doing {}.",
]
"""CoOp's UCF101 prompt ("a photo of a person doing {}.") and variations in the spirit of CLIP's UCF101 set."""

_BY_BENCH = {
    "cifar100": CIFAR100_TEMPLATES,
    "cub200": CUB200_TEMPLATES,
    "imagenet_r": IMAGENET_R_TEMPLATES,
    "cars196": CARS196_TEMPLATES,
    "omnibenchmark": OMNIBENCHMARK_TEMPLATES,
    "imagenet_sub": IMAGENET_SUB_TEMPLATES,
    "ucf101": UCF101_TEMPLATES,
}


def templates_for(bench: str) -> list[str]:
    """The ensemble of a benchmark; GENERIC_TEMPLATES for anything else."""
    return list(_BY_BENCH.get(bench, GENERIC_TEMPLATES))
