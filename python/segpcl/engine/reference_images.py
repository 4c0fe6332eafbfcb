"""The reference image set of `lora+distill-ref` (ZSCL-style distillation on data from outside the stream)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..benchmarks.imagefolder import images_in
from ..config import RunConfig
from ..errors import ConfigError, DataError

TOY_REFERENCE_IMAGES = 256
"""Images of the toy world's pretraining domain used as the toy benchmark's default reference set."""


def reference_images(cfg: RunConfig, image_size: int) -> torch.Tensor:
    """[N, 3, H, W] images in [0, 1]: every image under method.reference (recursively), or on the toy
    benchmark without one, renderings of the toy world's pretraining domain (fixed seed)."""
    folder = cfg.method.reference
    if folder is None:
        if cfg.data.bench != "toy":
            raise ConfigError(
                f"method {cfg.method.name} distils on reference images: give a folder with "
                "--set method.reference=DIR (e.g. a few hundred images from outside the benchmark)"
            )
        return _toy_reference(image_size)
    return _folder_images(Path(folder).expanduser(), image_size, cfg.data.strict, cfg.data.max_pixels)


def _toy_reference(image_size: int) -> torch.Tensor:
    from .. import toyworld as tw

    rng = np.random.default_rng(4242)
    labels = rng.integers(0, len(tw.CLASS_NAMES), TOY_REFERENCE_IMAGES)
    colours, shapes = tw.split_class(labels)
    images, _ = tw.render(colours, shapes, tw.PRETRAIN, seed=4243, size=image_size)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def _folder_images(root: Path, image_size: int, strict: bool, max_pixels: int) -> torch.Tensor:
    from ..benchmarks._files import ImageFileDataset

    if not root.is_dir():
        raise DataError(f"method.reference folder {root} does not exist; give a folder of images")
    files = images_in(root)
    if not files:
        raise DataError(f"method.reference folder {root} holds no image files")
    ds = ImageFileDataset(files, np.zeros(len(files), dtype=np.int64), image_size, strict=strict, max_pixels=max_pixels)
    items = [ds[i] for i in range(len(ds))]
    kept = [x for x, label in items if label >= 0]
    if not kept:
        raise DataError(f"no image under {root} could be read; check them with `segpcl data check --folder`")
    return torch.stack(kept)
