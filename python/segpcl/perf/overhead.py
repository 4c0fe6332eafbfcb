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
   `torch.utils.flop_counter.FlopCounterMode`, next to the analytic count;
5. the peak memory of a SeGP-CL step with and without gradient checkpointing (memory.py).

Ratios are medians over repeats of paired ratios (each SeGP-CL block over the LoRA block of the same round),
so slow drifts of a shared machine cancel; the order within a round is reversed every other round. CUDA is
synchronised around every timed block. With random weights (no --pretrained) the numbers are costs only; the
loss values mean nothing.

Timings exclude data loading (images are synthetic, already on the device). In a real run DPGD's seed scan and
after_task's prototype pass each read the task's images once more.

Here: the measurements, in order. Beside it: config.py (OverheadConfig), workload.py (the model, learners and
synthetic data they run on), timing.py (the timer, FLOP counter, profiler), results.py (the derived numbers, one
section of the result dict each), format.py (the printed report), targets.py (the paper's targets).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import asdict

import torch

from ..environment import environment
from . import results
from .config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_IMAGES_PER_TASK, OverheadConfig, check_config
from .format import format_overhead
from .memory import measure_memory
from .targets import INFERENCE_TARGET, TRAIN_AIM, TRAIN_TARGET
from .timing import count_flops, machine, profile_table, stats
from .workload import Workload

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_IMAGES_PER_TASK",
    "INFERENCE_TARGET",
    "TRAIN_AIM",
    "TRAIN_TARGET",
    "OverheadConfig",
    "format_overhead",
    "measure_overhead",
]


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
    """The measurements in order (training steps, before/after_task, inference), then the result dict."""
    check_config(cfg)
    b = Workload.build(cfg)
    b.model.train()
    sweep = _time_training_steps(b)
    train_flops = _count_training_flops(b)
    profile = _profile_steps(b) if cfg.profile else None
    b.model.eval()
    _time_task_hooks(b)
    _time_inference(b)
    inference_flops = _count_inference_flops(b)
    memory = measure_memory(cfg, b) if cfg.memory else None
    result = {
        **results.headline(b, sweep, train_flops, inference_flops),
        "breakdown": results.breakdown(b),
        "task": results.task(b),
        "inference": results.inference(b, inference_flops),
        "train_flops_per_step": train_flops,
        "model": results.model(b),
        "setting": results.setting(b),
        "config": {**asdict(cfg), "sweep_anchors": list(cfg.sweep_anchors), "lora_towers": list(cfg.lora_towers)},
        "environment": {**environment(), **machine(b.device)},
        "timings": {
            "unit": "seconds per call (training steps: per step); medians and all repeats, interleaved",
            **{name: stats(values) for name, values in b.timer.samples.items()},
        },
    }
    if profile is not None:
        result["profile"] = profile
    if memory is not None:
        result["memory"] = memory
    return result


# ----------------------------------------------------------------------------------------- measurements


def _time_training_steps(b: Workload) -> list[int]:
    """1. The LoRA and SeGP-CL training steps (and the sweep's other A), interleaved with the parts of a step:
    text tower, image tower at B and B + A, a teacher forward. Returns the swept A (besides the effective A)."""
    B = b.cfg.batch_size
    fns: dict[str, Callable[[], object]] = {
        "lora_step": lambda: b.train_step(b.lora),
        "segpcl_step": lambda: b.train_step(b.seg, b.A),
    }
    sweep = sorted({min(a, b.n_anchors) for a in b.cfg.sweep_anchors} - {b.a_eff})  # the learner uses min(A, K)
    for a in sweep:
        fns[f"segpcl_step_A{a}"] = lambda a=a: b.train_step(b.seg, a)
    if b.text_lora:
        fns["text_fwd_bwd"] = b.text_fwd_bwd
    fns["image_fwd_bwd_B"] = b.image_fwd_bwd(B)
    fns["image_fwd_bwd_B+A"] = b.image_fwd_bwd(B + b.a_eff)
    fns["teacher_forward_B"] = b.teacher_forward
    b.timer.interleaved(fns, b.cfg.repeats, b.cfg.warmup, b.cfg.steps_per_repeat)
    b.seg.cfg.anchors_per_step = b.A
    return sweep


def _count_training_flops(b: Workload) -> dict[str, int]:
    """FLOPs of one training step of each method, counted by FlopCounterMode."""
    return {"lora": count_flops(lambda: b.train_step(b.lora)), "segpcl": count_flops(lambda: b.train_step(b.seg))}


def _profile_steps(b: Workload) -> dict[str, str]:
    """torch.profiler tables (top operators) of one training step of each method."""
    return {
        "lora": profile_table(lambda: b.train_step(b.lora), b.device),
        "segpcl": profile_table(lambda: b.train_step(b.seg), b.device),
    }


@contextlib.contextmanager
def _timing_anchor_builds(b: Workload, anchor_s: list[float], seed_scan_s: list[float]) -> Iterator[None]:
    """While the block runs, every DPGD anchor build of the SeGP-CL learner (its public `anchor_builder`) is
    timed into `anchor_s`, and the seed scan inside it (build_anchors' `seed_scan`) into `seed_scan_s`."""
    from ..method.anchors import build_anchors, stream_seeds

    scan = b.timer.timed(stream_seeds, seed_scan_s)
    original = b.seg.anchor_builder
    b.seg.anchor_builder = b.timer.timed(functools.partial(build_anchors, seed_scan=scan), anchor_s)
    try:
        yield
    finally:
        b.seg.anchor_builder = original


def _time_task_hooks(b: Workload) -> None:
    """2./3. before_task (teacher copy, DPGD anchors, TSGR edges), with the anchor build and its seed scan
    timed inside it, and after_task (migration, new prototypes), of each method."""
    anchor_s: list[float] = []
    seed_scan_s: list[float] = []
    for _ in range(b.cfg.anchor_repeats):
        with _timing_anchor_builds(b, anchor_s, seed_scan_s):
            b.timer.record("segpcl_before_task", lambda: b.seg.before_task(1, b.task_batches))
        b.timer.record("lora_before_task", lambda: b.lora.before_task(1, b.task_batches))
    b.timer.samples["build_anchors"] = anchor_s
    b.timer.samples["seed_scan"] = seed_scan_s
    for _ in range(b.cfg.anchor_repeats):
        b.timer.record("segpcl_after_task", lambda: b.seg.after_task(1, b.task_batches))
        b.timer.record("lora_after_task", lambda: b.lora.after_task(1, b.task_batches))


def _time_inference(b: Workload) -> None:
    """4. Inference, CLIP-only (lora) against dual path (segpcl) on the same model and images; then the
    prediction heads alone on cached features (50 calls per timed block)."""
    from ..method.prototypes import dual_path_probs

    seg, lora = b.seg, b.lora
    for lrn in (lora, seg):
        lrn.begin_eval(1)
    if seg.eval_prototypes is None:
        raise RuntimeError("the dual path is off (no prototypes or beta = 0); the inference comparison needs it")
    inf_fns = {"clip_predict": lambda: lora.predict(b.eval_images), "dual_predict": lambda: seg.predict(b.eval_images)}
    b.timer.interleaved(inf_fns, b.cfg.repeats, b.cfg.warmup)
    with torch.no_grad(), b.autocast():
        feats, proto_feats = seg.encoder(b.model)(b.eval_images)
    feats, proto_feats = feats.float(), proto_feats.float()
    scale = float(b.model.logit_scale())
    text, protos, beta, fusion = seg.eval_text, seg.eval_prototypes, seg.cfg.beta, seg.cfg.fusion
    head_calls = 50
    head_fns = {
        "clip_head": lambda: dual_path_probs(feats, text, None, None, scale, scale, beta),
        "dual_head": lambda: dual_path_probs(feats, text, proto_feats, protos, scale, scale, beta, fusion),
    }
    b.timer.interleaved(head_fns, b.cfg.repeats, 1, head_calls)


def _count_inference_flops(b: Workload) -> dict:
    """FLOPs per image of CLIP-only and dual-path prediction (counted on 2 images), and the extra per image."""
    n_flop = min(2, b.cfg.eval_batch_size)
    flops_clip = count_flops(lambda: b.lora.predict(b.eval_images[:n_flop]))
    flops_dual = count_flops(lambda: b.seg.predict(b.eval_images[:n_flop]))
    extra_total = flops_dual - flops_clip
    extra = extra_total // n_flop if extra_total % n_flop == 0 else extra_total / n_flop
    return {"extra": extra, "clip": flops_clip / n_flop, "dual": flops_dual / n_flop}
