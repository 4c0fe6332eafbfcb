"""`segpcl bench overhead`: what SeGP-CL costs over plain LoRA fine-tuning, measured side by side.

Everything runs in one process on one model, through the real `Learner` code path, set up as task t = 2 of a
stream (C seen classes, C - increment of them old), with synthetic images, class names and templates:

1. one training step of method `lora` (CE; forward, backward, grad clip, the run's optimizer: SGD by default)
   against one of `segpcl` (CE + ACGD on A cached anchors + rooted TSGR), same batch, interleaved (A B B A ...)
   after warm-up; both with the method's defaults (rank-32 B-only LoRA, per-class seeds, raw-space prototypes);
2. DPGD anchor construction (`before_task`, which builds the teacher, the anchors and the TSGR neighbourhoods),
   in forward-pass equivalents per anchor;
3. the whole task: steps x step time + before_task + after_task (prototype transfer and new prototypes);
4. inference: CLIP-only against dual-path `predict`, time and the extra FLOPs counted by
   `torch.utils.flop_counter.FlopCounterMode`, next to the analytic count.

Ratios are medians over repeats of paired ratios (each SeGP-CL block over the LoRA block of the same round),
so slow drifts of a shared machine cancel; the order within a round is reversed every other round. CUDA is
synchronised around every timed block. With random weights (no --pretrained) the numbers are costs only; the
loss values mean nothing.

Timings exclude data loading (images are synthetic, already on the device). In a real run DPGD's seed scan and
after_task's prototype pass each read the task's images once more.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .config import LoraSection, MethodSection
from .environment import cpu_model, environment
from .errors import ConfigError

TRAIN_TARGET = 1.20
"""The paper's claim: training overhead < 20% over plain LoRA."""
TRAIN_AIM = 1.10
INFERENCE_TARGET = 1.01
"""Near-zero inference overhead (checked on GPU with ViT-L/14)."""

# A typical task: CIFAR-100 in 10 tasks has 10 classes x 500 training images; the paper trains 10 epochs.
DEFAULT_IMAGES_PER_TASK = 5000
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 128


@dataclass
class OverheadConfig:
    arch: str = "tiny"
    """tiny, toy-clip, or any open_clip architecture (random weights unless `pretrained`)."""
    pretrained: str | None = None
    """Local weights file (or offline open_clip tag); None: random weights, fine for costs."""
    device: str = "cpu"
    precision: str = "fp32"
    """fp32, or bf16 autocast (CUDA), as in training."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """New-task images per training step (B; paper: 128)."""
    anchors_per_step: int | None = None
    """Anchors per step (A); None: MethodSection's default, i.e. what training uses."""
    classes: int = 100
    """Seen classes C at the measured task."""
    increment: int = 10
    """New classes of the measured task (old classes = C - increment)."""
    templates: int = 6
    """Prompt templates per class (CIFAR-100's ensemble has 6); the text tower runs C x templates prompts."""
    repeats: int = 10
    """Timed repeats of every interleaved measurement (medians are reported)."""
    warmup: int = 2
    """Untimed rounds before the timed repeats."""
    steps_per_repeat: int = 1
    """Training steps per timed block."""
    images_per_task: int = DEFAULT_IMAGES_PER_TASK
    """Training images of the task (DPGD scans all of them for seeds; after_task reads them once)."""
    epochs: int = DEFAULT_EPOCHS
    """Epochs per task, for the default task_steps."""
    task_steps: int | None = None
    """Training steps of a typical task; None: epochs x ceil(images_per_task / batch_size)."""
    k_seed: int | None = None
    """Anchors built per task; None: MethodSection's default."""
    pgd_steps: int | None = None
    """PGD iterations; None: MethodSection's default."""
    anchor_repeats: int = 2
    """Timed before_task / after_task calls (after one untimed call)."""
    eval_batch_size: int = 256
    """Images per inference call (and per batch of the task scans)."""
    sweep_anchors: tuple[int, ...] = ()
    """Also measure the step ratio at these anchors-per-step values (same interleaved loop)."""
    lora_towers: tuple[str, ...] = ("visual", "text")
    """Towers with LoRA (as lora.towers). Without the text tower, text embeddings are cached and TSGR is off."""
    profile: bool = False
    """Add a torch.profiler table (top operators) of one LoRA step and one SeGP-CL step."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    seed: int = 0


@dataclass
class _Timer:
    device: torch.device
    samples: dict[str, list[float]] = field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object], n: int = 1) -> float:
        """Seconds per call of fn, over n calls, synchronised at both ends."""
        self.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / n

    def interleaved(self, fns: dict[str, Callable[[], object]], repeats: int, warmup: int, n: int = 1) -> None:
        """Run every fn in turn, warm-up rounds first; store seconds per call. The order is reversed every other
        round (A B C, C B A, ...) so that no fn always runs right after the same neighbour."""
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        items = list(fns.items())
        for r in range(repeats):
            for name, fn in items if r % 2 == 0 else items[::-1]:
                self.samples.setdefault(name, []).append(self.time(fn, n))

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over repeats of the paired ratio num / den."""
        return statistics.median(a / b for a, b in zip(self.samples[num], self.samples[den], strict=True))


def _machine(device: torch.device) -> dict:
    out = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "all": values}


def _check(cfg: OverheadConfig) -> None:
    positive = ["batch_size", "classes", "increment", "templates", "repeats", "steps_per_repeat",
                "images_per_task", "epochs", "anchor_repeats", "eval_batch_size"]  # fmt: skip
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {cfg.warmup}")
    if cfg.increment >= cfg.classes:
        raise ConfigError(
            f"--classes ({cfg.classes}) must exceed --increment ({cfg.increment}): the measured task needs old classes"
        )
    for a in [cfg.anchors_per_step, *cfg.sweep_anchors]:
        if a is not None and a < 1:
            raise ConfigError(f"anchors per step must be at least 1, got {a} (A = 0 is plain LoRA + TSGR)")
    if not cfg.lora_towers or set(cfg.lora_towers) - {"visual", "text"}:
        raise ConfigError(f"--lora-towers must be visual, text or both, got {','.join(cfg.lora_towers)}")
    if cfg.task_steps is not None and cfg.task_steps < 1:
        raise ConfigError(f"--task-steps must be at least 1, got {cfg.task_steps}")


@contextlib.contextmanager
def _timed_calls(timer: _Timer, module, name: str, into: list[float]):
    """Record the time of every call of `module.name` (the learner's own call) while the block runs."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        timer.sync()
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        timer.sync()
        into.append(time.perf_counter() - t0)
        return out

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def _count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _profile_table(fn: Callable[[], object], device: torch.device, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def measure_overhead(cfg: OverheadConfig) -> dict:
    """Run all measurements; returns the result dict written by --json (see the module docstring)."""
    threads = torch.get_num_threads()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        return _measure(cfg)
    finally:
        torch.set_num_threads(threads)


def _measure(cfg: OverheadConfig) -> dict:
    from .config import RunConfig
    from .engine.device import autocast_factory, resolve_device
    from .engine.trainer import make_optimizer, optimizer_step
    from .method import anchors as anchors_module
    from .method import learner as learner_module
    from .method.learner import Learner
    from .method.prototypes import dual_path_probs
    from .models.loading import load_clip
    from .models.lora import apply_lora, lora_parameters

    _check(cfg)
    defaults = MethodSection()
    A = cfg.anchors_per_step if cfg.anchors_per_step is not None else defaults.anchors_per_step
    k_seed = cfg.k_seed if cfg.k_seed is not None else defaults.k_seed
    pgd_steps = cfg.pgd_steps if cfg.pgd_steps is not None else defaults.pgd_steps
    B, C, inc, T = cfg.batch_size, cfg.classes, cfg.increment, cfg.templates
    n_old = C - inc
    steps_per_task = cfg.epochs * math.ceil(cfg.images_per_task / B)
    task_steps = cfg.task_steps if cfg.task_steps is not None else steps_per_task

    device = resolve_device(cfg.device)
    autocast = autocast_factory(device, cfg.precision)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    model = load_clip(cfg.arch, cfg.pretrained, device=device, precision=cfg.precision)
    model.eval()
    lora_cfg = LoraSection(towers=list(cfg.lora_towers))  # the method's LoRA defaults (rank 32, B only)
    apply_lora(model, lora_cfg)
    model.to(device)
    setup_s = time.perf_counter() - t0
    d, H = model.embed_dim, model.image_size
    weights = (
        f"pretrained: {cfg.pretrained}" if cfg.pretrained is not None
        else ("toy-clip's own pretraining" if cfg.arch == "toy-clip" else "random (costs only, not accuracy)")
    )  # fmt: skip

    class_names = [f"synthetic class {i}" for i in range(C)]
    templates = [f"a photo of a {{}}, variant {j}." for j in range(T)]
    task_sizes = [n_old, inc]
    learners = {}
    for name in ("lora", "segpcl"):
        mcfg = MethodSection(name=name, anchors_per_step=A, k_seed=k_seed, pgd_steps=pgd_steps)
        learners[name] = Learner(
            model, class_names, templates, task_sizes, mcfg, text_has_lora="text" in lora_cfg.towers,
            device=device, autocast=autocast,
        )  # fmt: skip
    lora, seg = learners["lora"], learners["segpcl"]
    # prototypes of every class (normally built at the end of each task): DPGD's visual targets and dual path
    gen = torch.Generator().manual_seed(cfg.seed)
    d_p = seg.prototypes.bank.dim
    seg.prototypes.add(torch.randn(C, d_p, generator=gen), torch.arange(C))

    # the task's training set, synthetic, on the device: one pool of images served batch after batch
    pool_n = min(cfg.eval_batch_size, cfg.images_per_task)
    pool = torch.rand(pool_n, 3, H, H, generator=gen).to(device)
    pool_labels = (n_old + torch.arange(pool_n) % inc).to(device)

    def task_batches():
        left = cfg.images_per_task
        while left > 0:
            n = min(pool_n, left)
            yield pool[:n], pool_labels[:n]
            left -= n

    images = torch.rand(B, 3, H, H, generator=gen).to(device)
    labels = (n_old + torch.randint(0, inc, (B,), generator=gen)).to(device)
    eval_images = torch.rand(cfg.eval_batch_size, 3, H, H, generator=gen).to(device)

    timer = _Timer(device)
    # 1. anchors once, untimed (warm-up); the anchors stay cached for the training steps
    for lrn in (lora, seg):
        lrn.before_task(1, task_batches)
    n_anchors = len(seg.anchors)
    teacher = seg.teacher
    n_edges = seg.tsgr.n_edges if seg.tsgr is not None else 0

    params = lora_parameters(model)
    opt = make_optimizer(params, RunConfig())  # the default train section: what training uses
    finite = {"all": True}

    def train_step(lrn: Learner, anchors: int | None = None) -> None:
        """The trainer's step: loss, finite check, then its optimizer_step (backward, clip, optimizer)."""
        if anchors is not None:
            lrn.cfg.anchors_per_step = anchors
        loss, _ = lrn.training_loss(images, labels)
        finite["all"] &= math.isfinite(loss.item())  # the trainer's one host sync per step
        optimizer_step(loss, opt, params, 1.0)

    def image_fb(n: int) -> Callable[[], None]:
        x = torch.cat([images, seg.anchors.images[: n - B]]) if n > B else images

        def run() -> None:
            with autocast():
                feats = model.image_features(x)
            feats.sum().backward()
            opt.zero_grad(set_to_none=True)

        return run

    def text_fb() -> None:
        with autocast():  # as in Learner.training_loss
            text = lora.student_text(C)
        text.sum().backward()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def teacher_forward() -> None:
        with autocast():
            teacher.image_features(images)

    a_eff = min(A, n_anchors)
    fns: dict[str, Callable[[], object]] = {
        "lora_step": lambda: train_step(lora),
        "segpcl_step": lambda: train_step(seg, A),
    }
    sweep = sorted({min(a, n_anchors) for a in cfg.sweep_anchors} - {a_eff})  # the learner uses min(A, K)
    for a in sweep:
        fns[f"segpcl_step_A{a}"] = lambda a=a: train_step(seg, a)
    text_lora = "text" in lora_cfg.towers
    if text_lora:
        fns["text_fwd_bwd"] = text_fb
    fns["image_fwd_bwd_B"] = image_fb(B)
    fns["image_fwd_bwd_B+A"] = image_fb(B + a_eff)
    fns["teacher_forward_B"] = teacher_forward
    model.train()
    timer.interleaved(fns, cfg.repeats, cfg.warmup, cfg.steps_per_repeat)
    seg.cfg.anchors_per_step = A
    train_flops = {"lora": _count_flops(lambda: train_step(lora)), "segpcl": _count_flops(lambda: train_step(seg))}
    profile = None
    if cfg.profile:
        profile = {
            "lora": _profile_table(lambda: train_step(lora), device),
            "segpcl": _profile_table(lambda: train_step(seg), device),
        }
    model.eval()

    # 2./3. before_task (teacher copy, DPGD anchors, TSGR edges) and after_task (migration, new prototypes)
    anchor_s: list[float] = []
    seed_scan_s: list[float] = []
    for _ in range(cfg.anchor_repeats):
        with (
            _timed_calls(timer, learner_module, "build_anchors", anchor_s),
            _timed_calls(timer, anchors_module, "_stream_seeds", seed_scan_s),
        ):
            timer.samples.setdefault("segpcl_before_task", []).append(
                timer.time(lambda: seg.before_task(1, task_batches))
            )
        timer.samples.setdefault("lora_before_task", []).append(timer.time(lambda: lora.before_task(1, task_batches)))
    timer.samples["build_anchors"] = anchor_s
    timer.samples["seed_scan"] = seed_scan_s
    for _ in range(cfg.anchor_repeats):
        timer.samples.setdefault("segpcl_after_task", []).append(timer.time(lambda: seg.after_task(1, task_batches)))
        timer.samples.setdefault("lora_after_task", []).append(timer.time(lambda: lora.after_task(1, task_batches)))

    # 4. inference: CLIP-only (lora) vs dual path (segpcl) on the same model and images
    for lrn in (lora, seg):
        lrn.begin_eval(1)
    if seg._eval_protos is None:
        raise RuntimeError("the dual path is off (no prototypes or beta = 0); the inference comparison needs it")
    inf_fns = {"clip_predict": lambda: lora.predict(eval_images), "dual_predict": lambda: seg.predict(eval_images)}
    timer.interleaved(inf_fns, cfg.repeats, cfg.warmup)
    with torch.no_grad(), autocast():
        feats, proto_feats = seg.encoder(model)(eval_images)
    feats, proto_feats = feats.float(), proto_feats.float()
    scale = float(model.logit_scale())
    text, protos, beta, fusion = seg._eval_text, seg._eval_protos, seg.cfg.beta, seg.cfg.fusion
    head_calls = 50
    head_fns = {
        "clip_head": lambda: dual_path_probs(feats, text, None, None, scale, scale, beta),
        "dual_head": lambda: dual_path_probs(feats, text, proto_feats, protos, scale, scale, beta, fusion),
    }
    timer.interleaved(head_fns, cfg.repeats, 1, head_calls)
    n_flop = min(2, cfg.eval_batch_size)
    flops_clip = _count_flops(lambda: lora.predict(eval_images[:n_flop]))
    flops_dual = _count_flops(lambda: seg.predict(eval_images[:n_flop]))
    extra_total = flops_dual - flops_clip
    extra_flops = extra_total // n_flop if extra_total % n_flop == 0 else extra_total / n_flop
    flops_clip /= n_flop
    flops_dual /= n_flop

    # ---- derived numbers ---------------------------------------------------------------------------
    med = timer.median
    lora_step, seg_step = med("lora_step"), med("segpcl_step")
    train_ratio = timer.ratio("segpcl_step", "lora_step")
    before, after = med("segpcl_before_task"), med("segpcl_after_task")
    lora_task = task_steps * lora_step + med("lora_before_task") + med("lora_after_task")
    seg_task = task_steps * seg_step + before + after
    fwd_per_image = med("teacher_forward_B") / B
    anchor_build = statistics.median(anchor_s)
    anchor_equiv = anchor_build / (n_anchors * fwd_per_image)
    seed_scan = statistics.median(seed_scan_s)
    text_t = med("text_fwd_bwd") if text_lora else 0.0
    img_b, img_ba = med("image_fwd_bwd_B"), med("image_fwd_bwd_B+A")
    rest = max(lora_step - text_t - img_b, 0.0)
    per_anchor = max(img_ba - img_b, 0.0) / max(a_eff, 1)
    a_at_target = (TRAIN_TARGET - 1) * lora_step / per_anchor if per_anchor > 0 else None
    a_at_aim = (TRAIN_AIM - 1) * lora_step / per_anchor if per_anchor > 0 else None
    analytic_extra = 2 * C * d_p
    head_extra = (med("dual_head") - med("clip_head")) / cfg.eval_batch_size
    sweep_ratios = {str(a_eff): train_ratio}
    for a in sweep:
        sweep_ratios[str(a)] = timer.ratio(f"segpcl_step_A{a}", "lora_step")
    sweep_ratios = dict(sorted(sweep_ratios.items(), key=lambda kv: int(kv[0])))

    result = {
        "train_step_ratio": train_ratio,
        "task_overhead_ratio": seg_task / lora_task,
        "anchor_cost_forward_equiv": anchor_equiv,
        "inference_time_ratio": timer.ratio("dual_predict", "clip_predict"),
        "extra_flops_per_image": extra_flops,
        "extra_flops_per_image_analytic": analytic_extra,
        "extra_flops_formula": (
            f"2*C*d_p = 2*{C}*{d_p} (the prototype-branch matmul in the {seg.cfg.prototype_space} prototype space, "
            f"counted by FlopCounterMode); normalising the raw feature and the logit fusion add about 3*d_p + 3*C = "
            f"{3 * d_p + 3 * C} elementwise FLOPs that FlopCounterMode does not count"
        ),
        "train_flops_ratio": train_flops["segpcl"] / train_flops["lora"] if train_flops["lora"] else None,
        "train_step_ratio_by_anchors": sweep_ratios,
        "targets": {
            "train_step_ratio": {"target": TRAIN_TARGET, "aim": TRAIN_AIM, "met": train_ratio <= TRAIN_TARGET},
            "inference_time_ratio": {
                "target": INFERENCE_TARGET,
                "met": timer.ratio("dual_predict", "clip_predict") <= INFERENCE_TARGET,
                "note": "the target is stated for ViT-L/14 on a GPU",
            },
            "extra_flops_per_image": {"target": analytic_extra, "met": extra_flops == analytic_extra},
        },
        "breakdown": {
            "text_fwd_bwd_s": text_t,
            "image_fwd_bwd_B_s": img_b,
            "image_fwd_bwd_B_plus_A_s": img_ba,
            "rest_of_lora_step_s": rest,
            "image_cost_per_anchor_s": per_anchor,
            "predicted_train_step_ratio": (lora_step + img_ba - img_b) / lora_step,
            "anchors_per_step_at_1.20": a_at_target,
            "anchors_per_step_at_1.10": a_at_aim,
            "image_work_ratio": (B + a_eff) / B,
        },
        "task": {
            "task_steps": task_steps,
            "task_steps_rule": (
                "given by --task-steps"
                if cfg.task_steps is not None
                else f"epochs x ceil(images_per_task / batch_size) = {cfg.epochs} x ceil({cfg.images_per_task} / {B})"
            ),  # fmt: skip
            "lora_task_s": lora_task,
            "segpcl_task_s": seg_task,
            "segpcl_before_task_s": before,
            "segpcl_after_task_s": after,
            "build_anchors_s": anchor_build,
            "seed_scan_s": seed_scan,
            "pgd_and_teacher_outputs_s": anchor_build - seed_scan,
            "seed_scan_forward_equiv": seed_scan / (n_anchors * fwd_per_image),
            "pgd_forward_equiv": (anchor_build - seed_scan) / (n_anchors * fwd_per_image),
            "n_anchors": n_anchors,
            "forward_per_image_s": fwd_per_image,
            "anchor_cost_forward_equiv_expected": cfg.images_per_task / n_anchors + 2 * pgd_steps + 2,
            "anchor_cost_expected_rule": (
                "seed scan (images_per_task / K forwards per anchor) + pgd_steps x (forward + input-only backward "
                "~ 2 forwards) + 1 teacher forward on the anchor + 1 on its seed (the anchor statistics)"
            ),
        },
        "inference": {
            "eval_batch_size": cfg.eval_batch_size,
            "clip_per_image_s": med("clip_predict") / cfg.eval_batch_size,
            "dual_per_image_s": med("dual_predict") / cfg.eval_batch_size,
            "head_extra_per_image_s": head_extra,
            "time_ratio_from_head": 1 + head_extra / (med("clip_predict") / cfg.eval_batch_size),
            "flops_per_image_clip": flops_clip,
            "flops_per_image_dual": flops_dual,
        },
        "train_flops_per_step": train_flops,
        "model": {
            "arch": cfg.arch,
            "weights": weights,
            "embed_dim": d,
            "image_size": H,
            "lora": asdict(lora_cfg),
            "lora_parameters": sum(p.numel() for p in params),
            "setup_s": setup_s,
        },
        "setting": {
            "seen_classes": C,
            "old_classes": n_old,
            "new_classes": inc,
            "templates": T,
            "text_prompts_per_step": C * T if text_lora else 0,
            "lora_towers": list(lora_cfg.towers),
            "autocast": "bf16" if cfg.precision == "bf16" and device.type == "cuda" else "none (fp32)",
            "batch_size": B,
            "anchors_per_step": A,
            "anchors_per_step_effective": a_eff,
            "k_seed": k_seed,
            "pgd_steps": pgd_steps,
            "tsgr_edges": n_edges,
            "losses_finite": finite["all"],
            "method_defaults": "MethodSection defaults except anchors_per_step, k_seed, pgd_steps",
        },
        "config": {**asdict(cfg), "sweep_anchors": list(cfg.sweep_anchors), "lora_towers": list(cfg.lora_towers)},
        "environment": {**environment(), **_machine(device)},
        "timings": {
            "unit": "seconds per call (training steps: per step); medians and all repeats, interleaved",
            **{name: _stats(values) for name, values in timer.samples.items()},
        },
    }
    if profile is not None:
        result["profile"] = profile
    return result


def _ms(s: float) -> str:
    """A duration in 13 characters, in us, ms or s."""
    if s < 1e-3:
        return f"{s * 1e6:10.2f} us"
    return f"{s * 1e3:10.2f} ms" if s < 10 else f"{s:10.2f} s "


def _verdict(value: float, target: float, aim: float | None = None) -> str:
    if value <= target:
        ok = f"met (<= {target:.2f})"
        if aim is not None:
            ok += ", aim <= {:.2f} {}".format(aim, "met" if value <= aim else f"missed by {value - aim:.3f}")
        return ok
    return f"MISSED: target <= {target:.2f}, over by {value - target:.3f}"


def _why_missed(r: dict) -> list[str]:
    """One line per missed target, saying where the extra time comes from."""
    tm, tk, bd, inf, s = r["timings"], r["task"], r["breakdown"], r["inference"], r["setting"]
    lora_step, seg_step = tm["lora_step"]["median"], tm["segpcl_step"]["median"]
    out = []
    if r["train_step_ratio"] > TRAIN_TARGET:
        anchors = bd["image_fwd_bwd_B_plus_A_s"] - bd["image_fwd_bwd_B_s"]
        out.append(
            f"  why the step misses: the A = {s['anchors_per_step_effective']} anchors add {anchors * 1e3:.2f} ms of "
            f"image-tower work ({bd['image_work_ratio']:.2f}x image batch) to a {lora_step * 1e3:.2f} ms LoRA step; "
            f"the other {(seg_step - lora_step - anchors) * 1e3:.2f} ms are the ACGD/TSGR loss ops and timing noise. "
            "Fewer anchors per step lower it (see below); so does more text-tower work per step (C x templates)."
        )
    if r["task_overhead_ratio"] > TRAIN_TARGET:
        extra = tk["segpcl_before_task_s"] + tk["segpcl_after_task_s"]
        out.append(
            f"  why the task misses: before_task + after_task = {_ms(extra).strip()} "
            f"({extra / tk['lora_task_s'] * 100:.1f}% of the task's {tk['task_steps']} LoRA steps) on top of the "
            f"per-step overhead ({tk['task_steps']} x {(seg_step - lora_step) * 1e3:.2f} ms)."
        )
    if r["inference_time_ratio"] > INFERENCE_TARGET:
        out.append(
            f"  why inference misses: the dual-path head costs {inf['head_extra_per_image_s'] * 1e6:.3f} us per image "
            f"({inf['time_ratio_from_head']:.4f}x); the rest is timing noise of whole forward passes (more --repeats)."
        )
    return out


def format_overhead(r: dict) -> str:
    """The human-readable report of a `measure_overhead` result."""
    s, m, env, tk, inf, bd = r["setting"], r["model"], r["environment"], r["task"], r["inference"], r["breakdown"]
    tm = r["timings"]
    dev = env.get("gpu") or f"{env['cpu_model']} ({env['cpu_cores']} cores, {env['torch_threads']} torch threads)"
    cfg = r["config"]
    lines = [
        f"segpcl bench overhead: {m['arch']} (d={m['embed_dim']}, {m['image_size']}px), weights {m['weights']}",
        f"device {env['device']} [{dev}], precision {cfg['precision']} (autocast: {s['autocast']}), "
        f"torch {env['torch']}",
        f"setting: task 2 of a stream, C={s['seen_classes']} seen classes ({s['old_classes']} old, "
        f"{s['new_classes']} new), LoRA on {'+'.join(s['lora_towers'])}, {s['templates']} templates -> "
        f"{s['text_prompts_per_step']} prompts through the LoRA text tower per step; B={s['batch_size']} images, "
        f"A={s['anchors_per_step_effective']} anchors per "
        f"step, K={tk['n_anchors']} anchors, {s['pgd_steps']} PGD steps, {s['tsgr_edges']} TSGR edges",
        f"medians of {cfg['repeats']} interleaved repeats after {cfg['warmup']} warm-up rounds; ratios are medians "
        "of paired ratios",
        "",
        f"{'':34}{'plain LoRA':>13}{'SeGP-CL':>13}{'ratio':>9}  verdict",
        f"{'training step':34}{_ms(tm['lora_step']['median'])}{_ms(tm['segpcl_step']['median'])}"
        f"{r['train_step_ratio']:8.3f}x  {_verdict(r['train_step_ratio'], TRAIN_TARGET, TRAIN_AIM)}",
        f"{'  (FLOPs per step, counted)':34}{r['train_flops_per_step']['lora'] / 1e9:10.2f} GF"
        f"{r['train_flops_per_step']['segpcl'] / 1e9:10.2f} GF{r['train_flops_ratio']:8.3f}x",
        f"{'before_task (teacher, DPGD, TSGR)':34}{_ms(tm['lora_before_task']['median'])}"
        f"{_ms(tk['segpcl_before_task_s'])}",
        f"{'after_task (migration, prototypes)':34}{_ms(tm['lora_after_task']['median'])}"
        f"{_ms(tk['segpcl_after_task_s'])}",
        f"{'whole task (' + str(tk['task_steps']) + ' steps)':34}{_ms(tk['lora_task_s'])}{_ms(tk['segpcl_task_s'])}"
        f"{r['task_overhead_ratio']:8.3f}x  steps: {tk['task_steps_rule']}",
        f"{'inference per image':34}{_ms(inf['clip_per_image_s'])}{_ms(inf['dual_per_image_s'])}"
        f"{r['inference_time_ratio']:8.3f}x  {_verdict(r['inference_time_ratio'], INFERENCE_TARGET)}"
        + ("" if env.get("gpu") else " (target stated for GPU ViT-L/14)"),
        "",
        f"DPGD anchors: {_ms(tk['build_anchors_s']).strip()} for {tk['n_anchors']} anchors = "
        f"{r['anchor_cost_forward_equiv']:.1f} forward-pass equivalents per anchor (one forward = "
        f"{tk['forward_per_image_s'] * 1e3:.3f} ms per image at batch {s['batch_size']}); expected about "
        f"{tk['anchor_cost_forward_equiv_expected']:.1f} = {tk['anchor_cost_expected_rule']}. "
        f"Seed scan of {cfg['images_per_task']} images: {_ms(tk['seed_scan_s']).strip()} "
        f"({tk['seed_scan_forward_equiv']:.1f} per anchor); {s['pgd_steps']} PGD steps and the teacher outputs: "
        f"{tk['pgd_forward_equiv']:.1f} per anchor.",
        f"extra inference FLOPs per image: {r['extra_flops_per_image']:,} counted by FlopCounterMode; analytic "
        f"{r['extra_flops_per_image_analytic']:,} = {r['extra_flops_formula']} "
        f"[{'equal' if r['extra_flops_per_image'] == r['extra_flops_per_image_analytic'] else 'DIFFERENT'}]; "
        f"{r['extra_flops_per_image'] / 1e9:.6f} GFLOPs, {r['extra_flops_per_image'] / inf['flops_per_image_clip']:.2e}"
        " of the CLIP forward.",
        f"dual-path head alone (timed on cached features, {cfg['repeats']} x 50 calls): "
        f"{inf['head_extra_per_image_s'] * 1e6:.3f} us extra per image, i.e. an inference ratio of "
        f"{inf['time_ratio_from_head']:.4f}x without the timing noise of whole forward passes.",
        "",
        "where the training step goes (measured separately, same loop):",
        f"  text tower fwd+bwd ({s['text_prompts_per_step']} prompts) {_ms(bd['text_fwd_bwd_s']).strip()}, image "
        f"tower fwd+bwd at B={s['batch_size']} {_ms(bd['image_fwd_bwd_B_s']).strip()}, at B+A="
        f"{s['batch_size'] + s['anchors_per_step_effective']} {_ms(bd['image_fwd_bwd_B_plus_A_s']).strip()}, rest "
        f"of the LoRA step (loss, clip, optimizer) {_ms(bd['rest_of_lora_step_s']).strip()}",
        f"  ACGD puts A anchors through the image tower: (B+A)/B = {bd['image_work_ratio']:.2f}x image work; "
        + (
            "TSGR reuses the text embeddings CE computes. "
            if s["text_prompts_per_step"]
            else "text tower frozen: its embeddings are cached and TSGR is off. "
        )
        + "Predicted step ratio from these parts: "
        f"{bd['predicted_train_step_ratio']:.3f}x.",
    ]
    lines += _why_missed(r)
    if bd["anchors_per_step_at_1.20"] is not None:
        lines.append(
            f"  one anchor costs {bd['image_cost_per_anchor_s'] * 1e3:.3f} ms: the step ratio reaches 1.20 at about "
            f"A = {bd['anchors_per_step_at_1.20']:.1f} and 1.10 at about A = {bd['anchors_per_step_at_1.10']:.1f} "
            f"(batch {s['batch_size']}, this model, C x templates = {s['text_prompts_per_step']})."
        )
    if len(r["train_step_ratio_by_anchors"]) > 1:
        lines.append(
            "  measured step ratio by anchors per step: "
            + ", ".join(f"A={a}: {v:.3f}x" for a, v in r["train_step_ratio_by_anchors"].items())
        )
    if not s["losses_finite"]:
        lines.append("  note: some losses were not finite (random weights); timings are still valid")
    if "profile" in r:
        for name in ("lora", "segpcl"):
            lines += ["", f"torch.profiler, one {name} step (top operators by self time):", r["profile"][name]]
    return "\n".join(lines)
