"""`segpcl bench overhead` on the tiny model: the command runs on a CPU and its JSON is complete and consistent.

Costs are measured by the command itself, never asserted as timings here (DESIGN §5)."""

import json
import math
import statistics

from click.testing import CliRunner

from segpcl.cli import main

C, INC, B, A, K, STEPS, IMAGES = 6, 2, 4, 2, 4, 2, 12
SMALL = [
    "--classes", str(C), "--increment", str(INC), "--templates", "2", "--batch-size", str(B),
    "--anchors-per-step", str(A), "--k-seed", str(K), "--pgd-steps", str(STEPS), "--images-per-task", str(IMAGES),
    "--eval-batch-size", "8", "--repeats", "2", "--warmup", "1", "--anchor-repeats", "1", "--threads", "1",
    "--no-memory",  # the peak-memory children are tested in test_grad_checkpointing.py
]  # fmt: skip


def _run(tmp_path, *extra):
    out = tmp_path / "overhead.json"
    res = CliRunner().invoke(main, ["bench", "overhead", "--model", "tiny", *SMALL, "--json", str(out), *extra])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output, json.loads(out.read_text())


def test_bench_overhead_tiny_json(tmp_path):
    from segpcl.models.loading import load_clip

    output, r = _run(tmp_path, "--sweep-anchors", "1", "--task-steps", "7")
    assert "training step" in output and "random" in output
    for key in ("train_step_ratio", "task_overhead_ratio", "anchor_cost_forward_equiv", "inference_time_ratio"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    assert r["anchor_cost_forward_equiv"] > 1  # a PGD step alone costs more than one forward

    # the extra inference FLOPs are exactly the prototype matmul, 2 * C * d_p, with d_p the raw visual width
    # (the default prototype space) read from the model independently
    d = load_clip("tiny").raw_dim
    assert r["extra_flops_per_image"] == 2 * C * d == r["extra_flops_per_image_analytic"]
    assert r["targets"]["extra_flops_per_image"]["met"] is True
    inf = r["inference"]
    assert inf["flops_per_image_dual"] - inf["flops_per_image_clip"] == 2 * C * d
    # ACGD adds A anchor images to the image tower: counted training FLOPs grow
    assert r["train_flops_per_step"]["segpcl"] > r["train_flops_per_step"]["lora"] > 0

    t = r["timings"]
    med = {k: v["median"] for k, v in t.items() if isinstance(v, dict)}
    for name in ("lora_step", "segpcl_step", "segpcl_before_task", "build_anchors", "clip_predict", "dual_predict"):
        assert len(t[name]["all"]) >= 1 and med[name] > 0, name
        assert med[name] == statistics.median(t[name]["all"])
    assert len(t["lora_step"]["all"]) == len(t["segpcl_step"]["all"]) == 2
    paired = statistics.median(s / p for s, p in zip(t["segpcl_step"]["all"], t["lora_step"]["all"], strict=True))
    assert math.isclose(r["train_step_ratio"], paired, rel_tol=1e-9)

    # whole task: 7 steps (given) + before_task + after_task, against 7 LoRA steps
    tk = r["task"]
    n_anchors = K * (C - INC)  # K seeds per old class
    assert tk["task_steps"] == 7 and tk["n_anchors"] == n_anchors
    seg_task = 7 * med["segpcl_step"] + med["segpcl_before_task"] + med["segpcl_after_task"]
    lora_task = 7 * med["lora_step"] + med["lora_before_task"] + med["lora_after_task"]
    assert math.isclose(r["task_overhead_ratio"], seg_task / lora_task, rel_tol=1e-9)
    fwd_per_image = med["teacher_forward_B"] / B
    assert math.isclose(
        r["anchor_cost_forward_equiv"], med["build_anchors"] / (n_anchors * fwd_per_image), rel_tol=1e-9
    )
    assert tk["anchor_cost_forward_equiv_expected"] == IMAGES / n_anchors + 2 * STEPS + 2

    assert set(r["train_step_ratio_by_anchors"]) == {"1", str(A)}
    assert r["train_step_ratio_by_anchors"][str(A)] == r["train_step_ratio"]
    s = r["setting"]
    assert (s["seen_classes"], s["old_classes"], s["batch_size"], s["anchors_per_step"]) == (C, C - INC, B, A)
    assert s["tsgr_edges"] > 0 and s["text_prompts_per_step"] == 2 * C
    assert r["config"]["repeats"] == 2 and r["model"]["weights"].startswith("random")
    for key in ("torch", "open_clip", "peft", "native_core", "cpu_model", "cpu_cores"):
        assert key in r["environment"], key


def test_bench_overhead_default_task_steps_and_bad_setting(tmp_path):
    _, r = _run(tmp_path, "--epochs", "2", "--lora-towers", "visual")
    assert r["task"]["task_steps"] == 2 * math.ceil(IMAGES / B)
    assert r["setting"]["tsgr_edges"] == 0 and r["setting"]["text_prompts_per_step"] == 0
    res = CliRunner().invoke(main, ["bench", "overhead", "--classes", "4", "--increment", "4"])
    assert res.exit_code == 2 and "--increment" in res.output
