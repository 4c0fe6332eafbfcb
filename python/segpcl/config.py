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

from .engine.nofollow import atomic_write_text
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
    """`seed1993` (PyCIL's permutation), `rapf` / `mgclip` (the order file RAPF's / MG-CLIP's repository ships
    for this benchmark: rapf for cifar100, cub200, imagenet_r, imagenet_sub; mgclip for cifar100, imagenet_r,
    imagenet_sub; segpcl.benchmarks.protocol), or a file of class indices (YAML/JSON/text list). Empty: PyCIL's
    permutation drawn from class_order_seed. `boundary` (toy only): each task shares an attribute with exactly
    half of the previous task's classes (segpcl.benchmarks.toy.boundary_class_order, from class_order_seed)."""
    class_order_seed: int = 1993
    """Seed of the PyCIL permutation when class_order is empty (and of `boundary`); other orders ignore it."""
    class_names: str | None = None
    """File overriding class names (`id name` lines or one name per line)."""
    templates: str | None = None
    """`ensemble` (the benchmark's own ensemble; also when empty), `single` ("a good photo of a {}.", the one
    prompt RAPF and MG-CLIP use), or a file of prompt templates, one per line with `{}`."""
    strict: bool = False
    """Fail on unreadable image files instead of skipping and counting them."""
    max_pixels: int = 40_000_000
    """Images larger than this (width x height, read before decoding) are skipped and counted like unreadable
    ones (an error with strict): far below PIL's decompression-bomb limit, so one huge file cannot stall a task."""
    download: bool = False
    """Let torchvision download the data set where it can (CIFAR100)."""
    max_train_per_class: int | None = None
    """Keep at most this many training images per class (quick runs, smoke tests); None keeps all."""
    max_test_per_class: int | None = None
    """Keep at most this many evaluation images (test, or validation) per class; None keeps all."""
    val_fraction: float = 0.0
    """0 (the papers' protocol): train on the whole training split, evaluate on the test split. > 0: hold out this
    share of each class's training images (a draw of the fixed split seed, the same for every run seed) as the
    validation set; training uses the rest and every evaluation (after each task, pre-task and zero-shot, the
    drift diagnostic, `segpcl eval`) reads the validation images, never a test image. A benchmark with a
    validation split of its own uses that instead: UCF101 with CoOp's json its `val` list (which trains when 0),
    the toy 30 rendered images per class (training keeps all 80). `segpcl tune` sets 0.1 unless given."""
    test_fraction: float = 0.2
    """`--bench folder` with one folder of class folders (no train/ and test/): the share of each class's images
    held out for test, drawn per class from the fixed data-split seed (the same for every run seed)."""
    seed: int | None = None
    """Seed of the data sample, where a benchmark draws its images: the toy renders its training, validation
    and test images from it, so seeds 1-5 are five samples of the world. None: train.seed. Data read from
    files ignore it (their splits stay fixed)."""
    max_tasks: int | None = None
    """Run only the first N tasks of the stream (`--max-tasks`); None runs all. May be raised on --resume."""
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
    tokenizer: str | None = None
    """Local tokenizer folder for models whose tokenizer comes from the Hugging Face hub (SigLIP, SigLIP2, CLIPA);
    None: the files beside `pretrained`, else the local HF cache (nothing is downloaded)."""
    grad_checkpointing: bool = False
    """Recompute each transformer block's activations in backward (less memory, more time) for large towers."""


@dataclass
class LoraSection:
    rank: int = 32
    """LoRA rank (paper: 32)."""
    alpha: float = 32.0
    """LoRA alpha (scaling = alpha / rank; our reading: alpha = rank, scaling 1)."""
    dropout: float = 0.0
    """Dropout on the LoRA input (our reading: 0; not stated)."""
    targets: list[str] = field(default_factory=lambda: ["attn.in_proj", "mlp.c_fc"])
    """Module name suffixes inside each residual block that get LoRA. segpcl replaces open_clip's
    nn.MultiheadAttention by plain Linear projections, so `attn.in_proj` (q, k, v) and `attn.out_proj` are
    ordinary Linear layers. Our reading (the paper names no layers): the in-projection and the first MLP layer
    (`mlp.c_fc`), which with rank 32 and B only give exactly the revision's 3.44M on ViT-B/16 (3,440,640)."""
    towers: list[str] = field(default_factory=lambda: ["visual", "text"])
    """Towers that get LoRA: visual, text (paper: both)."""
    train_a: bool = False
    """Train LoRA's down-projection A too; paper: only the up-projection B is trained (A stays at its init)."""


@dataclass
class TrainSection:
    epochs: int = 10
    """Epochs per task (paper: 10)."""
    batch_size: int = 128
    """Training batch size (new-task images; paper: 128)."""
    optimizer: str = "sgd"
    """sgd (paper: SGD with cosine decay), adamw, or adam (torch.optim.Adam, weight decay added to the
    gradient: RAPF's), over the method's trainable parameters, with warm-up (warmup_frac) and `schedule`."""
    lr: float = 1e-3
    """Learning rate (paper: 1e-3 with SGD)."""
    momentum: float = 0.9
    """SGD momentum (our reading: the paper does not state it)."""
    weight_decay: float = 0.0
    """Weight decay (our reading: 0; the paper does not state it)."""
    warmup_frac: float = 0.1
    """Fraction of a task's steps with linear warm-up before cosine decay (our reading: the paper states cosine
    decay and mentions no warm-up; the benchmark presets set 0)."""
    warmup_steps: int = 0
    """Linear warm-up over this many steps of each task instead of warmup_frac's share (0: warmup_frac decides);
    a task shorter than that never leaves its warm-up (MoE-Adapters4CL's fixed 30 steps)."""
    schedule: str = "cosine"
    """The learning rate after warm-up: cosine (decay to 0 over the task's steps) or multistep (times `gamma` at
    each epoch in `milestones`, as torch's MultiStepLR stepped once per epoch: RAPF's)."""
    milestones: list[int] = field(default_factory=list)
    """schedule=multistep: the epochs (0-based, counted within each task) from which the rate is multiplied by
    gamma once more."""
    gamma: float = 0.1
    """schedule=multistep: the factor applied at each milestone."""
    grad_clip: float = 1.0
    """Gradient norm clip (0: off; our reading: the paper does not mention clipping)."""
    eval_batch_size: int = 256
    """Evaluation batch size."""
    seed: int = 0
    """Seed of everything random in the run."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto."""
    diagnose: bool = False
    """Measure the boundary-vs-core drift of the old classes at the end of every task t >= 2 (`--diagnose`;
    segpcl.analysis.drift): metrics.json `drift`, a table in log.txt, plots/drift.svg; no effect on training."""
    log: list[str] = field(default_factory=list)
    """Extra logs beside metrics.json and metrics.csv: tensorboard writes event files to <run>/tensorboard
    (`--log tensorboard`; needs `pip install segpcl[tensorboard]`); wandb logs to Weights & Biases, files under
    <run>/wandb, offline unless logged in or WANDB_MODE says otherwise (`--log wandb`; `pip install segpcl[wandb]`)."""


@dataclass
class MethodSection:
    name: str = "segpcl"
    """Method (a row of the paper's tables): see `segpcl train --help` or segpcl.method.learner.METHODS."""
    lambda_acgd: float = 5.0
    """Weight of the anchor KL distillation lambda_A (paper: 5)."""
    tau: float = 20.0
    """ACGD temperature tau_A; the loss is tau_A^2 * KL(softmax(l_T / tau_A) || softmax(l_S / tau_A)) (paper: 20)."""
    anchors_per_step: int = 8
    """Anchors drawn into each training step for ACGD; each adds one image to the step's image forward and
    backward, so A = B/4 or less keeps the step within the paper's +20% (see `segpcl bench overhead`)."""
    anchors: str = "pgd"
    """pgd: seeds moved by dual-target PGD (the method); seeds: the seeds themselves, no PGD (the control)."""
    seed_mode: str = "per_class"
    """per_class: the k_seed new-task images most similar to each old class's text are seeds targeted at it
    (paper); global: the k_seed images with the highest best old-class similarity, targeted at that class."""
    k_seed: int = 5
    """Seeds per old class (per_class; paper: 5) or in all (global); lora+distill-randomclass draws this many
    random images per old class."""
    pgd_classes: str = "old"
    """Classes of DPGD's text cross-entropy: old, or seen (old + new: the anchor must cross the old/new
    boundary; our reading of "probe the boundary")."""
    pgd_steps: int = 10
    """PGD iterations K_adv (paper: 10)."""
    pgd_eps: float = 8 / 255
    """L-infinity radius of the perturbation, pixels in [0, 1] (our reading: the paper does not state it)."""
    pgd_gamma: float = 1.5e-3
    """PGD step size (paper: 1.5e-3)."""
    lambda_p: float = 1.0
    """Weight of the visual-prototype target in DPGD (0: text-only PGD). With pgd_balance, 1 gives both
    targets an equal say whatever the logit scale."""
    pgd_balance: bool = True
    """Bring both DPGD gradients to the same per-anchor size (at the shared raw feature, before the one backward
    through the tower) before weighting by lambda_p (our reading); false: the plain sum L_text + lambda_p L_vis."""
    early_stop_margin: float | None = None
    """Stop updating an anchor once the teacher's logit of its target leads the runner-up by this margin."""
    tsgr_mode: str = "rooted"
    """rooted (paper): KL of each new class's neighbourhood distribution in the zero-shot text space;
    edges: squared change of key-edge cosines against the previous task's teacher (the earlier reading)."""
    lambda_tsgr: float = 1.0
    """Weight of the text semantic-geometry regulariser lambda_T (paper: 1)."""
    tsgr_k: int | None = 10
    """rooted: neighbours per new class among all seen classes (paper: 10; our reading: seen, not only old);
    edges: each class keeps its k most similar classes."""
    tsgr_tau: float = 0.05
    """rooted: temperature of the neighbourhood softmax over cosines (paper: 0.05)."""
    tsgr_threshold: float | None = None
    """edges: also keep every pair with teacher text cosine >= threshold."""
    tsgr_from_task: int = 1
    """The first task (1-based) TSGR acts in: 1 (our reading of the paper: rooted TSGR needs no teacher, so it
    constrains the first task's new classes too) or 2 (from the second task on, like the distillation).
    `edges` acts from task 2 whatever this says (it compares with the previous task's teacher)."""
    prototype_space: str = "raw"
    """raw (paper): the visual tower's pooled output before the projection; embed: the normalised joint
    embedding f (the earlier reading)."""
    migrate: str = "proximity"
    """Prototype transfer: proximity (a Gaussian-weighted mean of the anchor drifts, scaled by the kernel value
    of the nearest anchor, so classes far from every anchor move little; our reading of the paper), gaussian
    (the weighted mean, not scaled), target (mean drift of the anchors targeted at the class), or none."""
    sigma: float | None = None
    """Width of the migration kernel; None = median distance between each anchor and its target prototype."""
    fusion: str = "logits"
    """Dual path: logits (paper): s cos(f, T) + beta s_v cos(v, P), or probs: (1 - beta) p_clip + beta p_proto."""
    beta: float = 0.5
    """Dual-path weight of the prototype branch (paper: 0.5; 0: CLIP path only)."""
    proto_scale: float | None = None
    """Scale s_v of the prototype branch; None = the model's logit scale s (our reading)."""
    ce_classes: str = "seen"
    """Classes of the training cross-entropy: seen (all classes so far) or task (the current task's only)."""
    reference: str | None = None
    """lora+distill-ref, zscl, zscl-lora: a folder of reference images (ZSCL-style); on the toy benchmark None =
    256 images of the toy world's pretraining domain."""
    rapf_beta: float = 2.0
    """rapf: pseudo-features per step: int(10 beta) per sampled old class, int(20 beta) per hard pair (RAPF's
    `beta`)."""
    rapf_classes_per_step: int = 2
    """rapf: old classes whose pseudo-features join each training batch (RAPF main.py's list_for_one_batch)."""
    rapf_threshold: float = 0.55
    """rapf: an (old, new) class pair is hard when their text embeddings are closer than this (Euclidean)."""
    rapf_margin: float = 0.1
    """rapf: margin of the hard-pair hinge."""
    rapf_mix_bias: float = 0.6
    """rapf: bias added to the fusion mask (1 or more keeps the new adapter whole)."""
    rapf_shrinkage: bool = False
    """rapf: shrink each covariance (add its mean diagonal to the diagonal and its mean off-diagonal to the rest)
    before sampling."""
    mgclip_drift: float | None = 0.1
    """mgclip: the first task's epochs end once the mean non-target logit on its images has moved by more than
    this share of the pretrained model's; the epochs before that one (at least 1) are kept, and every later task
    trains as many. None: every task trains train.epochs."""
    mgclip_agent_epochs: int = 3
    """mgclip: epochs of the visual agent (a cosine classifier on the frozen image features) after each task."""
    mgclip_agent_lr: float = 5e-4
    """mgclip: Adam learning rate of the visual agent (cosine decay to 1% of it over its steps)."""
    mgclip_agent_batch_size: int = 64
    """mgclip: batch size of the visual agent's training."""
    mgclip_agent_weight: float = 0.8
    """mgclip: share of the visual agent's probabilities in the fused prediction (the rest: CLIP's)."""
    zscl_label_smoothing: float = 0.2
    """zscl: label smoothing of the cross-entropy over the current task's classes (ZSCL's `ls`)."""
    zscl_weight: float = 5.0
    """zscl: weight of each of the two distillation terms (image->text and text->image) on the reference set."""
    zscl_temperature: float = 2.0
    """zscl: temperature of the distillation from the initial CLIP (the loss is scaled by its square)."""
    zscl_avg_every: int = 10
    """zscl: add the weights to the task's running average after every this many optimiser steps, from the first
    (ZSCL's `avg_freq`); the average becomes the model at the end of each task. 0: no averaging."""
    zscl_ref_text: str | None = None
    """zscl: a text file of reference sentences, one per line (ZSCL: the captions of its reference images).
    None: on the toy benchmark's default reference set, the toy world's captions; required with method.reference."""
    moe_experts: int = 2
    """moe-adapters: bottleneck adapters (experts) per residual block of each tower."""
    moe_top_k: int = 2
    """moe-adapters: experts the router mixes for each sample (the k largest router logits)."""
    moe_bottleneck: int = 64
    """moe-adapters: width of each adapter's down-projection."""
    moe_scale: float = 0.1
    """moe-adapters: factor on every adapter's output."""
    moe_dropout: float = 0.1
    """moe-adapters: dropout on the adapters' bottleneck activations while training."""
    moe_noisy_gating: bool = True
    """moe-adapters: add the router's learned Gaussian noise to its logits while training (never in evaluation)."""


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
    validate_ranges(cfg)
    checks = [
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.eval_batch_size >= 1, "train.eval_batch_size must be >= 1"),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (cfg.lora.rank >= 1, "lora.rank must be >= 1"),
        (cfg.model.precision in ("fp32", "bf16"), "model.precision must be fp32 or bf16"),
        (cfg.train.momentum >= 0 and cfg.train.weight_decay >= 0, "train.momentum and train.weight_decay must be >= 0"),
        (cfg.method.sigma is None or cfg.method.sigma > 0, "method.sigma must be > 0 (or null: derived)"),
        (cfg.method.tau > 0 and cfg.method.tsgr_tau > 0, "method.tau and method.tsgr_tau must be > 0"),
        (cfg.method.pgd_eps > 0 and cfg.method.pgd_gamma > 0, "method.pgd_eps and method.pgd_gamma must be > 0"),
        (cfg.method.pgd_steps >= 1 and cfg.method.k_seed >= 1, "method.pgd_steps and method.k_seed must be >= 1"),
        (cfg.method.anchors_per_step >= 1, "method.anchors_per_step must be >= 1"),
        (
            cfg.method.rapf_beta >= 0 and cfg.method.rapf_classes_per_step >= 0,
            "method.rapf_beta and method.rapf_classes_per_step must be >= 0 (0: no pseudo-features)",
        ),
        (cfg.method.tsgr_from_task >= 1, "method.tsgr_from_task must be >= 1 (1: from the first task)"),
        (
            (cfg.method.mgclip_drift is None or cfg.method.mgclip_drift > 0)
            and cfg.method.mgclip_agent_epochs >= 0
            and cfg.method.mgclip_agent_batch_size >= 1
            and cfg.method.mgclip_agent_lr > 0
            and 0 <= cfg.method.mgclip_agent_weight <= 1,
            "method.mgclip_drift must be > 0 (or null), mgclip_agent_epochs >= 0, mgclip_agent_batch_size >= 1, "
            "mgclip_agent_lr > 0 and mgclip_agent_weight in [0, 1]",
        ),
        (
            0 <= cfg.method.zscl_label_smoothing < 1
            and cfg.method.zscl_weight >= 0
            and cfg.method.zscl_temperature > 0
            and cfg.method.zscl_avg_every >= 0,
            "method.zscl_label_smoothing must be in [0, 1), zscl_weight >= 0, zscl_temperature > 0 and "
            "zscl_avg_every >= 0 (0: no weight averaging)",
        ),
        (
            1 <= cfg.method.moe_top_k <= cfg.method.moe_experts
            and cfg.method.moe_bottleneck >= 1
            and 0 <= cfg.method.moe_dropout < 1,
            "method.moe_top_k must be in [1, moe_experts], moe_bottleneck >= 1 and moe_dropout in [0, 1)",
        ),
        (0 <= cfg.method.beta <= 1 or cfg.method.fusion == "logits", "method.beta must be in [0, 1] with fusion=probs"),
        (cfg.method.beta >= 0, "method.beta must be >= 0"),
        (cfg.method.proto_scale is None or cfg.method.proto_scale > 0, "method.proto_scale must be > 0"),
        (
            (cfg.method.tsgr_k is not None and cfg.method.tsgr_k >= 1) or cfg.method.tsgr_threshold is not None,
            "method.tsgr_k must be >= 1 (or null with method.tsgr_threshold set)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for key, value in _choice_values(cfg).items():
        allowed = CHOICES[key]
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


CHOICES: dict[str, tuple[str, ...]] = {
    "train.optimizer": ("sgd", "adamw", "adam"),
    "train.schedule": ("cosine", "multistep"),
    "method.anchors": ("pgd", "seeds"),
    "method.seed_mode": ("per_class", "global"),
    "method.pgd_classes": ("old", "seen"),
    "method.tsgr_mode": ("rooted", "edges"),
    "method.prototype_space": ("raw", "embed"),
    "method.migrate": ("proximity", "gaussian", "target", "none"),
    "method.fusion": ("logits", "probs"),
    "method.ce_classes": ("seen", "task"),
}
"""Keys that take one of a few words, and those words."""


def _choice_values(cfg: RunConfig) -> dict[str, str]:
    return {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in CHOICES}


def all_preset_names() -> list[str]:
    """Every preset file: the benchmarks' own (`cifar100`) and the protocol presets (`cifar100-revision`)."""
    return sorted(p.name[:-5] for p in resources.files("segpcl.presets").iterdir() if p.name.endswith(".yaml"))


def preset_names() -> list[str]:
    """The benchmarks' own presets (file name = benchmark name; protocol presets have a `-` in the name)."""
    return [n for n in all_preset_names() if "-" not in n]


def _deep_update(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            _deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def load_preset(bench: str, _depth: int = 0) -> dict[str, Any]:
    """A preset (a benchmark's, or a protocol preset by file name) as a nested dict ({} if there is none).
    `extends: OTHER` at the top of a preset file starts from preset OTHER."""
    path = resources.files("segpcl.presets").joinpath(f"{bench}.yaml")
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("extends", None)
    if parent:
        if _depth > 4 or parent not in all_preset_names():
            raise ConfigError(f"preset {bench}: `extends: {parent}` names no preset (or loops)")
        data = _deep_update(load_preset(parent, _depth + 1), data)
    return data


def method_preset(method: str, bench: str) -> dict[str, Any]:
    """A method's own hyperparameters (presets/methods/<method>.yaml, Mammoth-style), applied over the
    benchmark's preset: its sections, then its `by_bench: {<bench>: {...}}` entry where the method's authors (or
    the toy) need other values on that benchmark. {} for methods without one (SeGP-CL's rows)."""
    path = resources.files("segpcl.presets").joinpath("methods", f"{method}.yaml")
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    per_bench = data.pop("by_bench", None) or {}
    return _deep_update(data, per_bench.get(bench) or {})


def preset_for(bench: str, preset: str) -> str:
    """`--preset NAME` for benchmark `bench`: the preset `<bench>-NAME` if it exists, else the preset NAME."""
    names = all_preset_names()
    for cand in (f"{bench}-{preset}", preset):
        if cand in names:
            return cand
    mine = [n[len(bench) + 1 :] for n in names if n.startswith(f"{bench}-")]
    raise ConfigError(
        f"no preset {preset!r} for benchmark {bench}; "
        + (f"its protocol presets: {', '.join(mine)}; " if mine else "")
        + f"all presets: {', '.join(names)}"
    )


def parse_set(items: list[str], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """`["train.lr=1e-3", "method.beta=0.3"]` -> nested dict with YAML-parsed values (added to `into`)."""
    out: dict[str, Any] = {} if into is None else into
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value (e.g. train.lr=1e-3), got {item!r}")
        key, raw = item.split("=", 1)
        set_dotted(out, key, parse_yaml(raw, f"--set {item!r}: the value"))
    return out


def parse_yaml(text: str, where: str) -> Any:
    """`text` parsed as YAML; malformed YAML is a one-line ConfigError saying where and what."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"{where} is not valid YAML ({problem}{at}); close brackets and quotes, or quote the whole value"
        ) from None


def resolve_config(
    bench: str = "toy",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> RunConfig:
    """Defaults < the benchmark's preset < a YAML config file < explicit overrides. The benchmark (whose
    preset applies) is the one the overrides name, else the config file's, else `bench`. With `preset`
    (`--preset NAME`), the preset `<bench>-NAME` (e.g. `revision`) or the preset NAME itself
    (e.g. `cifar100-revision`, which also selects its benchmark when `bench` is the default toy) replaces
    the benchmark's own."""
    from_file: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read as text ({exc}); pass a YAML file") from None
        from_file = parse_yaml(text, f"config file {path}") or {}
        if not isinstance(from_file, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections (data, model, lora, train, method)")
    overrides = overrides or {}
    for source in (overrides, from_file):
        named = source.get("data", {}).get("bench") if isinstance(source.get("data"), dict) else None
        if named:
            bench = named
            break
    preset_data = load_preset(bench)
    if preset:
        preset_data = load_preset(preset_for(bench, preset))
        named = (preset_data.get("data") or {}).get("bench")
        if named and named != bench:
            if bench != "toy":
                raise ConfigError(f"preset {preset} is for benchmark {named}, not {bench}")
            bench = named
    cfg = RunConfig()
    cfg.data.bench = bench
    _merge(cfg, preset_data, "")
    method = next((m for m in (_method_named(overrides), _method_named(from_file)) if m), cfg.method.name)
    _merge(cfg, method_preset(method, bench), "")
    _merge(cfg, from_file, "")
    _merge(cfg, overrides, "")
    _drop_foreign_weights(cfg, preset_data, from_file, overrides)
    return cfg


def _method_named(source: dict[str, Any]) -> str | None:
    section = source.get("method")
    return section.get("name") if isinstance(section, dict) else None


def _drop_foreign_weights(cfg: RunConfig, *sources: dict[str, Any]) -> None:
    """A later source that changes model.arch without naming model.pretrained does not inherit an earlier
    source's weights (the preset's `pretrained: openai` belongs to the preset's architecture)."""
    arch = weights = None
    for source in sources:
        model = source.get("model") if isinstance(source.get("model"), dict) else {}
        if "arch" in model and model["arch"] != arch:
            arch, weights = model["arch"], None
        if "pretrained" in model:
            weights = model["pretrained"]
    if arch is not None:
        cfg.model.pretrained = weights


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
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


SEED_MAX = 2**32 - 1
"""Seeds go to numpy (0 .. 2**32 - 1) and torch; train.seed * 7919 + task stays inside torch's range."""


def validate_ranges(cfg: RunConfig) -> None:
    """The data, split, seed and loader options: each in its range, checked before anything loads."""
    d, t = cfg.data, cfg.train
    checks = [
        (d.initial is None or d.initial >= 1, f"data.initial (--initial) must be >= 1, got {d.initial}"),
        (d.increment is None or d.increment >= 1, f"data.increment (--increment) must be >= 1, got {d.increment}"),
        (
            d.task_sizes is None
            or (
                isinstance(d.task_sizes, list)
                and len(d.task_sizes) >= 1
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in d.task_sizes)
            ),
            f"data.task_sizes must be a non-empty list of sizes >= 1, got {d.task_sizes}",
        ),
        (d.max_train_per_class is None or d.max_train_per_class >= 1, "data.max_train_per_class must be >= 1"),
        (d.max_test_per_class is None or d.max_test_per_class >= 1, "data.max_test_per_class must be >= 1 (or null)"),
        (d.max_tasks is None or d.max_tasks >= 1, f"data.max_tasks (--max-tasks) must be >= 1, got {d.max_tasks}"),
        (
            isinstance(t.log, list) and all(k in ("tensorboard", "wandb") for k in t.log),
            f"train.log (--log) takes a list of: tensorboard, wandb; got {t.log!r}",
        ),
        (d.num_workers >= 0, f"data.num_workers (--workers) must be >= 0, got {d.num_workers}"),
        (d.max_pixels >= 1, f"data.max_pixels must be >= 1 (width x height), got {d.max_pixels}"),
        (0 <= d.class_order_seed <= SEED_MAX, f"data.class_order_seed must be in 0..{SEED_MAX}"),
        (d.seed is None or 0 <= d.seed <= SEED_MAX, f"data.seed must be in 0..{SEED_MAX} (or null: train.seed)"),
        (0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1) (0: evaluate on test), got {d.val_fraction}"),
        (0 < d.test_fraction < 1, f"data.test_fraction must be in (0, 1), got {d.test_fraction}"),
        (0 <= t.seed <= SEED_MAX, f"train.seed (--seed) must be in 0..{SEED_MAX}, got {t.seed}"),
        (t.epochs >= 1, f"train.epochs (--epochs) must be >= 1, got {t.epochs}"),
        (t.grad_clip >= 0, "train.grad_clip must be >= 0 (0: off)"),
        (0 <= t.warmup_frac <= 1, "train.warmup_frac must be in [0, 1]"),
        (t.warmup_steps >= 0, "train.warmup_steps must be >= 0 (0: train.warmup_frac decides)"),
        (
            isinstance(t.milestones, list) and all(isinstance(m, int) and m >= 0 for m in t.milestones),
            f"train.milestones must be a list of epochs >= 0 (e.g. [4,10]), got {t.milestones!r}",
        ),
        (t.gamma > 0, f"train.gamma must be > 0, got {t.gamma}"),
        (
            isinstance(d.zs_eval, dict) and all(isinstance(k, str) and k and v for k, v in d.zs_eval.items()),
            "data.zs_eval must map NAME to PATH",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
