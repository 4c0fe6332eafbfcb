"""Typed run configuration: dataclasses with a docstring per field, YAML presets per benchmark,
`--set key=value` overrides, and the resolved config written next to the results."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class DataSection:
    bench: str = "toy"
    """Benchmark name (see `segpcl benches`)."""
    data_root: str | None = None
    """Folder of the data set in one of its accepted layouts (not needed for `toy`)."""
    initial: int | None = None
    """Classes in the first task (default: the benchmark's)."""
    increment: int | None = None
    """Classes per later task (default: the benchmark's)."""
    task_sizes: list[int] | None = None
    """Explicit list of task sizes; overrides initial/increment."""
    class_order: str | None = None
    """File with a class order (YAML/JSON/text list of class indices); default: PyCIL seed-1993 permutation."""
    class_order_seed: int = 1993
    """Seed of the PyCIL permutation when no class-order file is given."""
    class_names: str | None = None
    """File overriding class names (`id name` lines or one name per line)."""
    templates: str | None = None
    """File of prompt templates, one per line with `{}`."""
    strict: bool = False
    """Fail on unreadable image files instead of skipping and counting them."""
    download: bool = False
    """Let torchvision download the data set where it can (CIFAR100)."""
    max_train_per_class: int | None = None
    """Keep at most this many training images per class (quick runs, smoke tests); None keeps all."""
    max_test_per_class: int | None = None
    """Keep at most this many test images per class; None keeps all."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the main process)."""
    zs_eval: dict[str, str] = field(default_factory=dict)
    """Extra ImageFolder data sets NAME -> PATH for zero-shot retention, evaluated before and after the stream."""


@dataclass
class ModelSection:
    arch: str = "toy-clip"
    """open_clip architecture name, or `toy-clip` (segpcl's own pretrained tiny CLIP)."""
    pretrained: str | None = None
    """Local weights file or an open_clip tag resolvable offline; None = random init (or toy pretraining)."""
    precision: str = "fp32"
    """fp32, or bf16 autocast (CUDA)."""


@dataclass
class LoraSection:
    rank: int = 8
    """LoRA rank."""
    alpha: float = 16.0
    """LoRA alpha (scaling = alpha / rank)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    targets: list[str] = field(default_factory=lambda: ["attn", "mlp.c_fc", "mlp.c_proj"])
    """Module name suffixes that get LoRA (open_clip 3.x: `attn` is peft's MultiheadAttention support)."""
    towers: list[str] = field(default_factory=lambda: ["visual", "text"])
    """Towers that get LoRA: visual, text."""


@dataclass
class TrainSection:
    epochs: int = 4
    """Epochs per task."""
    batch_size: int = 32
    """Training batch size (new-task images)."""
    lr: float = 3e-4
    """AdamW learning rate (LoRA parameters)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_frac: float = 0.1
    """Fraction of a task's steps with linear warm-up before cosine decay."""
    grad_clip: float = 1.0
    """Gradient norm clip (0: off)."""
    eval_batch_size: int = 256
    """Evaluation batch size."""
    seed: int = 0
    """Seed of everything random in the run."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto."""


@dataclass
class MethodSection:
    name: str = "segpcl"
    """Method: zeroshot, lora, lora+acgd, lora+acgd+tsgr, segpcl, segpcl-textpgd, lora+distill-new."""
    lambda_acgd: float = 1.0
    """Weight of the anchor KL distillation (lambda_A)."""
    lambda_tsgr: float = 1.0
    """Weight of the text semantic-geometry regulariser (lambda_T)."""
    tau: float = 1.0
    """Temperature of the distillation softmaxes."""
    anchors_per_step: int = 8
    """Anchors drawn into each training step for ACGD; each adds one image to the step's image forward and
    backward, so A = B/4 keeps the step within the paper's +20% (see `segpcl bench overhead`)."""
    k_seed: int = 256
    """Seeds (new-task images most similar to old-class text) turned into anchors per task."""
    pgd_steps: int = 10
    """PGD iterations K."""
    pgd_eps: float = 8 / 255
    """L-infinity radius of the perturbation (pixels in [0, 1])."""
    pgd_gamma: float = 2 / 255
    """PGD step size."""
    lambda_p: float = 1.0
    """Weight of the visual-prototype target in DPGD (0: text-only PGD)."""
    early_stop_margin: float | None = None
    """Stop updating an anchor once the teacher's logit of c* leads the runner-up by this margin."""
    tsgr_k: int = 5
    """TSGR: each class keeps its k most similar classes as edges."""
    tsgr_threshold: float | None = None
    """TSGR: also keep every pair with teacher text cosine >= threshold."""
    migrate: str = "gaussian"
    """Prototype migration: gaussian, target, or none."""
    sigma: float | None = None
    """Gaussian migration width; None = median anchor-to-prototype distance of the task."""
    beta: float = 0.5
    """Dual-path fusion weight of the prototype branch (0: CLIP path only)."""
    proto_scale: float | None = None
    """Logit scale s_p of the prototype branch; None = the model's logit scale."""


@dataclass
class RunConfig:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    method: MethodSection = field(default_factory=MethodSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(obj: Any, updates: dict[str, Any], where: str) -> None:
    for key, value in updates.items():
        if not hasattr(obj, key) or key.startswith("_"):
            known = ", ".join(f.name for f in dataclasses.fields(obj))
            raise ConfigError(f"unknown config key {where}{key!r}; known keys here: {known}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} is a section; give it a mapping")
            _merge(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(value, _field_types(type(obj))[key], f"{where}{key}"))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert a YAML value to the field's type (YAML reads `1e-3` and `8/255` as strings)."""
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"config key {name} cannot be empty")
    scalar = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
    try:
        if scalar is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if scalar is float:
            if isinstance(value, str) and "/" in value:
                num, den = value.split("/", 1)
                return float(num) / float(den)
            return float(value)
        if scalar is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if scalar is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name} must be of type {scalar.__name__}, got {value!r}") from None
    return value


def validate(cfg: RunConfig) -> None:
    """Reject settings that would only fail after hours of training, with a message naming the key."""
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.eval_batch_size >= 1, "train.eval_batch_size must be >= 1"),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (cfg.lora.rank >= 1, "lora.rank must be >= 1"),
        (cfg.model.precision in ("fp32", "bf16"), "model.precision must be fp32 or bf16"),
        (cfg.method.migrate in ("gaussian", "target", "none"), "method.migrate must be gaussian, target or none"),
        (cfg.method.sigma is None or cfg.method.sigma > 0, "method.sigma must be > 0 (or null: derived)"),
        (cfg.method.tau > 0, "method.tau must be > 0"),
        (cfg.method.pgd_eps > 0 and cfg.method.pgd_gamma > 0, "method.pgd_eps and method.pgd_gamma must be > 0"),
        (cfg.method.pgd_steps >= 1 and cfg.method.k_seed >= 1, "method.pgd_steps and method.k_seed must be >= 1"),
        (cfg.method.anchors_per_step >= 1, "method.anchors_per_step must be >= 1"),
        (0 <= cfg.method.beta <= 1, "method.beta must be in [0, 1]"),
        (cfg.method.proto_scale is None or cfg.method.proto_scale > 0, "method.proto_scale must be > 0"),
        (
            (cfg.method.tsgr_k is not None and cfg.method.tsgr_k >= 1) or cfg.method.tsgr_threshold is not None,
            "method.tsgr_k must be >= 1 (or null with method.tsgr_threshold set)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("segpcl.presets").iterdir() if p.name.endswith(".yaml"))


def load_preset(bench: str) -> dict[str, Any]:
    """The preset of a benchmark as a nested dict ({} if the benchmark has none)."""
    path = resources.files("segpcl.presets").joinpath(f"{bench}.yaml")
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def parse_set(items: list[str], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """`["train.lr=1e-3", "method.beta=0.3"]` -> nested dict with YAML-parsed values (added to `into`)."""
    out: dict[str, Any] = {} if into is None else into
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value (e.g. train.lr=1e-3), got {item!r}")
        key, raw = item.split("=", 1)
        set_dotted(out, key, yaml.safe_load(raw))
    return out


def resolve_config(
    bench: str = "toy",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults < the benchmark's preset < a YAML config file < explicit overrides. The benchmark (whose
    preset applies) is the one the overrides name, else the config file's, else `bench`."""
    from_file: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        from_file = yaml.safe_load(path.read_text()) or {}
        if not isinstance(from_file, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections (data, model, lora, train, method)")
    overrides = overrides or {}
    for source in (overrides, from_file):
        named = source.get("data", {}).get("bench") if isinstance(source.get("data"), dict) else None
        if named:
            bench = named
            break
    cfg = RunConfig()
    cfg.data.bench = bench
    _merge(cfg, load_preset(bench), "")
    _merge(cfg, from_file, "")
    _merge(cfg, overrides, "")
    return cfg


def apply_overrides(cfg: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """Merge a nested dict of updates into cfg (keys checked, values typed) and return it."""
    _merge(cfg, updates, "")
    return cfg


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """tree["a"]["b"] = value for key "a.b", creating the sections on the way."""
    *sections, last = key.strip().split(".")
    for section in sections:
        tree = tree.setdefault(section, {})
    tree[last] = value


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    cfg = RunConfig()
    _merge(cfg, data, "")
    return cfg


def write_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
