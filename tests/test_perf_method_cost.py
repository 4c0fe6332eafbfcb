"""`segpcl perf overhead --method M,...`: every method's step, task and inference cost beside plain LoRA, and its
trainable parameters, in one process (tiny model). Costs are measured by the command, never asserted as timings;
the counts are checked against independent computations."""

import json
import math

from click.testing import CliRunner

from segpcl.cli import main

SMALL = [
    "--model", "tiny", "--classes", "6", "--increment", "2", "--templates", "2", "--batch-size", "4",
    "--images-per-task", "12", "--eval-batch-size", "8", "--repeats", "2", "--warmup", "1", "--anchor-repeats", "1",
    "--threads", "1", "--no-memory",
]  # fmt: skip


def test_method_costs_of_every_peer_beside_lora(tmp_path):
    from segpcl.models.loading import load_clip

    out = tmp_path / "cost.json"
    methods = "rapf,mgclip,zscl,moe-adapters,segpcl"
    res = CliRunner().invoke(main, ["perf", "overhead", *SMALL, "--method", methods, "--json", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    r = json.loads(out.read_text())
    rows = {row["method"]: row for row in r["methods"]}
    assert list(rows) == ["lora", *methods.split(",")]
    assert rows["lora"]["step_ratio"] == 1.0 and rows["lora"]["predict_ratio"] == 1.0
    for name, row in rows.items():
        for key in ("step_ratio", "task_ratio", "predict_ratio", "step_s", "predict_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key)
        steps = row["epochs"] * math.ceil(12 / 4)
        assert row["task_steps"] == steps
        assert math.isclose(row["task_s"], steps * row["step_s"] + row["before_task_s"] + row["after_task_s"])
        assert name in res.output
    # the methods' own epochs and optimisers come from their presets (RAPF 15 epochs of Adam, MoE 1 of AdamW)
    assert (rows["rapf"]["epochs"], rows["rapf"]["optimizer"]) == (15, "adam")
    assert (rows["moe-adapters"]["epochs"], rows["moe-adapters"]["optimizer"]) == (1, "adamw")
    # trainable parameters, counted independently on a fresh tiny model
    model = load_clip("tiny")
    d, width = model.embed_dim, model.base.visual.transformer.width
    assert rows["rapf"]["trainable_params"] == d * d  # RAPF: one bias-free d x d layer
    all_but_scale = sum(p.numel() for n, p in model.base.named_parameters() if "logit_" not in n)
    assert rows["zscl"]["trainable_params"] == all_but_scale  # ZSCL: everything but the logit scale
    blocks = sum(1 for m in model.base.modules() if type(m).__name__ == "ResidualAttentionBlock")
    in_proj = {  # LoRA rank 32 on in_proj and c_fc, B only (the cifar100 preset), per tower width
        w: 32 * 3 * w + 32 * 4 * w for w in (width, model.base.transformer.width)
    }
    n_vis = len(model.base.visual.transformer.resblocks)
    n_txt = len(model.base.transformer.resblocks)
    assert n_vis + n_txt == blocks
    want_lora = n_vis * in_proj[width] + n_txt * in_proj[model.base.transformer.width]
    assert rows["lora"]["trainable_params"] == want_lora
    assert rows["segpcl"]["trainable_params"] == want_lora  # SeGP-CL trains exactly LoRA's parameters (B only)


def test_unknown_method_is_one_line_exit_2():
    res = CliRunner().invoke(main, ["perf", "overhead", *SMALL, "--method", "rapf,nosuch"])
    assert res.exit_code == 2
    assert "nosuch" in res.output and "choose from" in res.output
    assert "Traceback" not in res.output


def test_more_old_classes_than_images_in_an_eval_batch(tmp_path):
    """The synthetic first task gives every old class an image (MG-CLIP's agent needs each class's mean), even
    when --eval-batch-size is smaller than the number of old classes (a ViT-B/16 run on a CPU)."""
    args = [*SMALL, "--classes", "20", "--eval-batch-size", "4", "--method", "mgclip"]
    res = CliRunner().invoke(main, ["perf", "overhead", *args, "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert [row["method"] for row in json.loads((tmp_path / "c.json").read_text())["methods"]] == ["lora", "mgclip"]


def test_segpcl_anchor_options_are_refused_with_several_methods():
    """--k-seed and the like set SeGP-CL's own report; with --method M,... every method takes its preset's settings,
    so the option would be ignored and the table mislabelled: one line, exit 2."""
    res = CliRunner().invoke(main, ["perf", "overhead", *SMALL, "--method", "rapf,segpcl", "--k-seed", "1"])
    assert res.exit_code == 2 and "--k-seed" in res.output and "drop it" in res.output
