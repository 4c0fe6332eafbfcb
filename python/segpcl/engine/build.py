"""Building a run's pieces from its config: the task stream (data), the CLIP model, and the method over it.
The engine and reopening a run (segpcl.inference.reopen) build them with these same functions, so a reopened
run predicts exactly as it did in training."""

from __future__ import annotations

from pathlib import Path

import torch

from ..benchmarks.base import (
    DataConfig,
    TaskStream,
    build_benchmark,
    get_benchmark_info,
    limit_per_class,
    pycil_class_order,
    task_sizes_from,
)
from ..config import RunConfig
from ..errors import ConfigError
from ..method.base import ContinualMethod
from ..method.registry import method_class
from ..models.clip import ClipModel
from ..models.loading import load_clip
from ..models.lora import apply_lora
from .device import seed_everything


def build_stream(cfg: RunConfig, image_size: int, run_dir: Path | None) -> TaskStream:
    info = get_benchmark_info(cfg.data.bench)
    data_cfg = DataConfig(
        data_root=Path(cfg.data.data_root) if cfg.data.data_root else None,
        image_size=image_size,
        class_names_file=Path(cfg.data.class_names) if cfg.data.class_names else None,
        templates_file=Path(cfg.data.templates) if cfg.data.templates else None,
        strict=cfg.data.strict,
        download=cfg.data.download,
        seed=0,  # data splits (e.g. ImageNet-R's 80/20) stay fixed across training seeds
        run_dir=run_dir,
    )
    bench = build_benchmark(cfg.data.bench, data_cfg)
    if cfg.data.max_train_per_class is not None or cfg.data.max_test_per_class is not None:
        bench = limit_per_class(bench, cfg.data.max_train_per_class, cfg.data.max_test_per_class)
    n = bench.n_classes
    if cfg.data.class_order == "boundary":  # the drift diagnostic's ground truth (toy only)
        from ..benchmarks.toy import boundary_class_order

        if cfg.data.bench != "toy":
            raise ConfigError("data.class_order=boundary is an order of the toy benchmark's classes (--bench toy)")
        increments = set(
            cfg.data.task_sizes or [cfg.data.initial or info.initial, cfg.data.increment or info.increment]
        )
        order = boundary_class_order(increments.pop() if len(increments) == 1 else 0, cfg.data.class_order_seed)
    elif cfg.data.class_order:
        from ..benchmarks.class_files import load_class_order

        order = load_class_order(Path(cfg.data.class_order), n)
    else:
        order = pycil_class_order(n, cfg.data.class_order_seed)
    if cfg.data.task_sizes:
        sizes = list(cfg.data.task_sizes)
    else:
        sizes = task_sizes_from(n, cfg.data.initial or info.initial, cfg.data.increment or info.increment)
    return TaskStream(bench, order, sizes)


def image_size_guess(arch: str) -> int:
    """The input size of `arch` without building it (so the data can be checked before any weights load)."""
    from ..models.tiny import TINY_CONFIGS

    if arch in TINY_CONFIGS:
        return int(TINY_CONFIGS[arch]["vision"]["image_size"])
    try:
        import open_clip

        size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
        return int(size[0] if isinstance(size, list | tuple) else size)
    except Exception:  # unknown arch: load_clip reports it
        return 224


def build_model(cfg: RunConfig, device: torch.device) -> ClipModel:
    """The run's CLIP before LoRA, in eval mode; seeded from train.seed first, so a model without weights file
    (a random tiny one) is the same in every process that builds it."""
    seed_everything(cfg.train.seed)
    model = load_clip(cfg.model.arch, cfg.model.pretrained, device=device, precision=cfg.model.precision)
    model.eval()
    return model


def build_method(
    cfg: RunConfig,
    model: ClipModel,
    stream,
    device: torch.device,
    autocast,
    reference_images: torch.Tensor | None = None,
) -> ContinualMethod:
    """LoRA on the model (for the methods that train), then the method over the stream's classes (`stream`: a
    TaskStream, or only its names when a run is reopened without its data)."""
    cls = method_class(cfg.method.name)
    trains = cls.needs(cfg.method.name).lora
    if trains:
        apply_lora(model, cfg.lora)
        model.to(device)
    return cls(
        model,
        stream.class_names,
        stream.bench.templates,
        stream.task_sizes,
        cfg.method,
        text_has_lora=trains and "text" in cfg.lora.towers,
        device=device,
        autocast=autocast,
        reference_images=reference_images,
    )
