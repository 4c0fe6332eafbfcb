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
    stream_task_sizes,
)
from ..benchmarks.protocol import class_order_for, templates_file, with_templates
from ..config import RunConfig
from ..errors import ConfigError
from ..method.base import ContinualMethod
from ..method.registry import method_class
from ..models.clip import ClipModel
from ..models.loading import load_clip
from ..models.lora import apply_lora
from .device import seed_everything


def data_seed(cfg: RunConfig) -> int:
    """The seed of the data sample (data.seed; default the run seed, so each seed is another sample of the toy)."""
    return cfg.train.seed if cfg.data.seed is None else cfg.data.seed


def build_stream(cfg: RunConfig, image_size: int, run_dir: Path | None) -> TaskStream:
    info = get_benchmark_info(cfg.data.bench)
    data_cfg = DataConfig(
        data_root=Path(cfg.data.data_root) if cfg.data.data_root else None,
        image_size=image_size,
        class_names_file=Path(cfg.data.class_names) if cfg.data.class_names else None,
        templates_file=templates_file(cfg.data.templates),
        strict=cfg.data.strict,
        max_pixels=cfg.data.max_pixels,
        download=cfg.data.download,
        seed=0,  # data splits (ImageNet-R's 80/20, the validation hold-out) stay fixed across training seeds
        test_fraction=cfg.data.test_fraction,
        sample_seed=data_seed(cfg),
        val_fraction=cfg.data.val_fraction,
        run_dir=run_dir,
    )
    bench = with_templates(build_benchmark(cfg.data.bench, data_cfg), cfg.data.templates)
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
    else:
        order = class_order_for(cfg.data.class_order, bench, cfg.data.bench, cfg.data.class_order_seed)
    if cfg.data.task_sizes:
        sizes = list(cfg.data.task_sizes)
    else:
        sizes = stream_task_sizes(info, n, cfg.data.initial, cfg.data.increment)
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
    m = cfg.model
    model = load_clip(m.arch, m.pretrained, device=device, precision=m.precision, tokenizer=m.tokenizer)
    if m.grad_checkpointing:
        model.set_grad_checkpointing(True)
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
    lora = cls.needs(cfg.method.name).lora
    if lora:
        apply_lora(model, cfg.lora)
        model.to(device)
    return cls(
        model,
        stream.class_names,
        stream.bench.templates,
        stream.task_sizes,
        cfg.method,
        text_has_lora=lora and "text" in cfg.lora.towers,
        device=device,
        autocast=autocast,
        reference_images=reference_images,
    )
