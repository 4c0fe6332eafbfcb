"""The numbers `segpcl bench overhead` reports, derived from the timings and FLOP counts of a measured
Workload (perf/overhead.py): one section of the result dict per function."""

from __future__ import annotations

import statistics
from dataclasses import asdict

from .targets import INFERENCE_TARGET, TRAIN_AIM, TRAIN_TARGET
from .workload import Workload


def _task_seconds(b: Workload, method: str) -> float:
    """A whole task of one method: task_steps x its step time + its before_task + its after_task."""
    med = b.timer.median
    return b.task_steps * med(f"{method}_step") + med(f"{method}_before_task") + med(f"{method}_after_task")


def _forward_per_image(b: Workload) -> float:
    return b.timer.median("teacher_forward_B") / b.cfg.batch_size


def headline(b: Workload, sweep: list[int], train_flops: dict[str, int], inference_flops: dict) -> dict:
    """The four ratios, the extra inference FLOPs, the step ratio by anchors per step, and the targets."""
    timer, C, d_p = b.timer, b.cfg.classes, b.seg.prototypes.bank.dim
    train_ratio = timer.ratio("segpcl_step", "lora_step")
    inference_ratio = timer.ratio("dual_predict", "clip_predict")
    anchor_build = statistics.median(timer.samples["build_anchors"])
    extra_flops, analytic_extra = inference_flops["extra"], 2 * C * d_p
    sweep_ratios = {str(b.a_eff): train_ratio}
    for a in sweep:
        sweep_ratios[str(a)] = timer.ratio(f"segpcl_step_A{a}", "lora_step")
    return {
        "train_step_ratio": train_ratio,
        "task_overhead_ratio": _task_seconds(b, "segpcl") / _task_seconds(b, "lora"),
        "anchor_cost_forward_equiv": anchor_build / (b.n_anchors * _forward_per_image(b)),
        "inference_time_ratio": inference_ratio,
        "extra_flops_per_image": extra_flops,
        "extra_flops_per_image_analytic": analytic_extra,
        "extra_flops_formula": (
            f"2*C*d_p = 2*{C}*{d_p} (the prototype-branch matmul in the {b.seg.cfg.prototype_space} prototype "
            f"space, counted by FlopCounterMode); normalising the raw feature and the logit fusion add about "
            f"3*d_p + 3*C = {3 * d_p + 3 * C} elementwise FLOPs that FlopCounterMode does not count"
        ),
        "train_flops_ratio": train_flops["segpcl"] / train_flops["lora"] if train_flops["lora"] else None,
        "train_step_ratio_by_anchors": dict(sorted(sweep_ratios.items(), key=lambda kv: int(kv[0]))),
        "targets": {
            "train_step_ratio": {"target": TRAIN_TARGET, "aim": TRAIN_AIM, "met": train_ratio <= TRAIN_TARGET},
            "inference_time_ratio": {
                "target": INFERENCE_TARGET,
                "met": inference_ratio <= INFERENCE_TARGET,
                "note": "the target is stated for ViT-L/14 on a GPU",
            },
            "extra_flops_per_image": {"target": analytic_extra, "met": extra_flops == analytic_extra},
        },
    }


def breakdown(b: Workload) -> dict:
    """Where the training step goes: text tower, image tower at B and B + A, the rest; the A at the targets."""
    med, B, a_eff = b.timer.median, b.cfg.batch_size, b.a_eff
    lora_step = med("lora_step")
    text_t = med("text_fwd_bwd") if b.text_lora else 0.0
    img_b, img_ba = med("image_fwd_bwd_B"), med("image_fwd_bwd_B+A")
    per_anchor = max(img_ba - img_b, 0.0) / max(a_eff, 1)
    return {
        "text_fwd_bwd_s": text_t,
        "image_fwd_bwd_B_s": img_b,
        "image_fwd_bwd_B_plus_A_s": img_ba,
        "rest_of_lora_step_s": max(lora_step - text_t - img_b, 0.0),
        "image_cost_per_anchor_s": per_anchor,
        "predicted_train_step_ratio": (lora_step + img_ba - img_b) / lora_step,
        "anchors_per_step_at_1.20": (TRAIN_TARGET - 1) * lora_step / per_anchor if per_anchor > 0 else None,
        "anchors_per_step_at_1.10": (TRAIN_AIM - 1) * lora_step / per_anchor if per_anchor > 0 else None,
        "image_work_ratio": (B + a_eff) / B,
    }


def task(b: Workload) -> dict:
    """The whole task of each method, and DPGD's cost in forward-pass equivalents per anchor."""
    cfg, med = b.cfg, b.timer.median
    anchor_build = statistics.median(b.timer.samples["build_anchors"])
    seed_scan = statistics.median(b.timer.samples["seed_scan"])
    per_anchor_forward = b.n_anchors * _forward_per_image(b)
    return {
        "task_steps": b.task_steps,
        "task_steps_rule": (
            "given by --task-steps"
            if cfg.task_steps is not None
            else f"epochs x ceil(images_per_task / batch_size) = {cfg.epochs} x ceil({cfg.images_per_task} / "
            f"{cfg.batch_size})"
        ),  # fmt: skip
        "lora_task_s": _task_seconds(b, "lora"),
        "segpcl_task_s": _task_seconds(b, "segpcl"),
        "segpcl_before_task_s": med("segpcl_before_task"),
        "segpcl_after_task_s": med("segpcl_after_task"),
        "build_anchors_s": anchor_build,
        "seed_scan_s": seed_scan,
        "pgd_and_teacher_outputs_s": anchor_build - seed_scan,
        "seed_scan_forward_equiv": seed_scan / per_anchor_forward,
        "pgd_forward_equiv": (anchor_build - seed_scan) / per_anchor_forward,
        "n_anchors": b.n_anchors,
        "forward_per_image_s": _forward_per_image(b),
        "anchor_cost_forward_equiv_expected": cfg.images_per_task / b.n_anchors + 2 * b.pgd_steps + 2,
        "anchor_cost_expected_rule": (
            "seed scan (images_per_task / K forwards per anchor) + pgd_steps x (forward + input-only backward "
            "~ 2 forwards) + 1 teacher forward on the anchor + 1 on its seed (the anchor statistics)"
        ),
    }


def inference(b: Workload, flops: dict) -> dict:
    """Inference time per image of each path, the head's extra time alone, and the FLOPs per image."""
    med, n = b.timer.median, b.cfg.eval_batch_size
    head_extra = (med("dual_head") - med("clip_head")) / n
    return {
        "eval_batch_size": n,
        "clip_per_image_s": med("clip_predict") / n,
        "dual_per_image_s": med("dual_predict") / n,
        "head_extra_per_image_s": head_extra,
        "time_ratio_from_head": 1 + head_extra / (med("clip_predict") / n),
        "flops_per_image_clip": flops["clip"],
        "flops_per_image_dual": flops["dual"],
    }


def model(b: Workload) -> dict:
    cfg = b.cfg
    weights = (
        f"pretrained: {cfg.pretrained}" if cfg.pretrained is not None
        else ("toy-clip's own pretraining" if cfg.arch == "toy-clip" else "random (costs only, not accuracy)")
    )  # fmt: skip
    return {
        "arch": cfg.arch,
        "weights": weights,
        "embed_dim": b.model.embed_dim,
        "image_size": b.model.image_size,
        "lora": asdict(b.lora_cfg),
        "lora_parameters": sum(p.numel() for p in b.params),
        "setup_s": b.setup_s,
    }


def setting(b: Workload) -> dict:
    cfg = b.cfg
    return {
        "seen_classes": cfg.classes,
        "old_classes": b.n_old,
        "new_classes": cfg.increment,
        "templates": cfg.templates,
        "text_prompts_per_step": cfg.classes * cfg.templates if b.text_lora else 0,
        "lora_towers": list(b.lora_cfg.towers),
        "autocast": "bf16" if cfg.precision == "bf16" and b.device.type == "cuda" else "none (fp32)",
        "batch_size": cfg.batch_size,
        "anchors_per_step": b.A,
        "anchors_per_step_effective": b.a_eff,
        "k_seed": b.k_seed,
        "pgd_steps": b.pgd_steps,
        "tsgr_edges": b.n_edges,
        "losses_finite": b.losses_finite,
        "method_defaults": "MethodSection defaults except anchors_per_step, k_seed, pgd_steps",
    }
