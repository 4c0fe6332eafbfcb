"""MG-CLIP (`--method mgclip`, method/peers/mgclip.py): its core operations against computations written out here
(the k/v-only LoRA leaves the q rows untouched, the drift rule that ends the first task's epochs, the visual
agent, the fused prediction), its preset, and a two-task toy run (tiny model) through resume, eval, predict and
export."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from interrupt import cut_in_task_two_then_resume

import segpcl
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.build import build_method, build_model, build_stream
from segpcl.engine.entry import run_training
from segpcl.errors import DataError
from segpcl.method.peers.mgclip import (
    class_means,
    fuse,
    kv_lora_weights,
    logit_drift,
    nontarget_sum,
    train_agent,
)
from segpcl.models.attention import LinearSelfAttention
from segpcl.models.lora import frozen_teacher


def _in_projs(model) -> dict[str, torch.Tensor]:
    """The in-projection weight [3d, d] (q; k; v) of every attention, by module name."""
    return {n: m.in_proj.weight for n, m in model.base.named_modules() if isinstance(m, LinearSelfAttention)}


def _cfg(epochs: int = 2, **method):
    """Two tasks of the toy (32 + 16 classes, 2 images each, batches of 16) on the tiny model; a constant
    learning rate, so a run stopped by the drift rule after E epochs can be compared with one of E epochs."""
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 2, "max_test_per_class": 2, "task_sizes": [32, 16, 16], "max_tasks": 2},
            "train": {"epochs": epochs, "batch_size": 16, "schedule": "multistep", "milestones": [], "device": "cpu"},
            "method": {"name": "mgclip", **method},
        },
    )


# -- core operations --------------------------------------------------------------------------------------------
def test_nontarget_mean_and_drift_match_loops():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(7, 5)), rng.integers(0, 5, size=7)
    per_image = [sum(logits[i, c] for c in range(5) if c != targets[i]) / 4 for i in range(7)]
    total = nontarget_sum(torch.tensor(logits), torch.tensor(targets))
    assert total[1] == 7 and float(total[0]) == pytest.approx(sum(per_image), abs=1e-12)
    assert logit_drift(10.0, 8.5) == pytest.approx(0.15) and logit_drift(10.0, 11.0) == pytest.approx(0.1)
    assert logit_drift(-2.0, -1.7) == pytest.approx(0.15)  # a negative pretrained mean (the toy CLIP's) too


def test_fusion_is_mgclips_weighted_double_softmax():
    rng = np.random.default_rng(1)
    logits, cos = rng.normal(size=(3, 6)) * 10, rng.uniform(-1, 1, size=(3, 6))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # the test forward's probabilities
    a, b = 1.0, 4.0  # main.py
    want = (a * np.exp(p) / np.exp(p).sum(1, keepdims=True) + b * np.exp(cos) / np.exp(cos).sum(1, keepdims=True)) / (
        a + b
    )
    got = fuse(torch.tensor(p), torch.tensor(cos), 0.8).numpy()
    assert np.allclose(got, want, atol=1e-12) and np.allclose(got.sum(1), 1)


def test_agent_starts_at_class_means_and_takes_adams_first_step():
    gen = torch.Generator().manual_seed(0)
    feats, targets = torch.randn(9, 4, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    means = class_means(feats, targets, 3)
    for c in range(3):
        assert torch.allclose(means[c], feats[targets == c].mean(0))
    rows, _ = train_agent(means, feats, targets, 0, 4, 1e-3, gen)
    assert torch.equal(rows, means)
    # one step on the whole set: Adam's first update is lr * g / (|g| + eps) of the unscaled cosine CE
    w = means.clone().requires_grad_(True)
    F.cross_entropy(F.normalize(feats, dim=-1) @ F.normalize(w, dim=-1).T, targets).backward()
    want = means - 1e-3 * w.grad / (w.grad.abs() + 1e-8)
    rows, loss = train_agent(means, feats, targets, 1, 9, 1e-3, torch.Generator().manual_seed(0))
    assert torch.allclose(rows, want, atol=1e-7) and loss > 0
    with pytest.raises(DataError, match="no readable training image"):
        class_means(feats, torch.zeros(9, dtype=torch.long), 2)


def test_lora_on_k_and_v_leaves_the_q_rows_untouched():
    cfg = _cfg()
    model = build_model(cfg, torch.device("cpu"))
    before = {n: w.detach().clone() for n, w in _in_projs(model).items()}
    stream = build_stream(cfg, model.image_size, None)
    method = build_method(cfg, model, stream, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    method.before_task(0, [])
    params = method.trainable_parameters()
    opt = torch.optim.Adam(params, lr=1e-2)
    model.train()
    for step in range(3):
        images = torch.rand(8, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(step))
        loss, _ = method.training_loss(images, torch.arange(8) % 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
    merged = _in_projs(frozen_teacher(model))
    assert set(merged) == set(before) and len(before) == 3  # the tiny model: 2 visual blocks, 1 text block
    for name, w in merged.items():
        d = w.shape[1]
        assert torch.equal(w[:d], before[name][:d]), name  # q: bit for bit the pretrained rows
        assert not torch.equal(w[d:], before[name][d:]) and (w[d:] - before[name][d:]).abs().amax(1).all()  # k, v: all
    for a, b in kv_lora_weights(model):
        d, half = b.shape[0] // 3, b.shape[1] // 2
        scaling = 2.0 / 16
        assert b.shape[1] == 16 and not b[:d].any() and not b[d : 2 * d, half:].any() and not b[2 * d :, :half].any()
        # two LoRAs with their own A: [0; B_k A_k; B_v A_v] * scaling
        delta = torch.cat([torch.zeros(d, d), b[d : 2 * d, :half] @ a[:half], b[2 * d :, half:] @ a[half:]]) * scaling
        assert torch.allclose(delta, (b @ a) * scaling, atol=1e-7) and delta[d:].abs().max() > 0
    for name, m in model.base.named_modules():  # q of the live (peft) layer is the pretrained q, bit for bit
        if isinstance(m, LinearSelfAttention):
            d = m.in_proj.in_features
            x = torch.randn(5, 2, d)
            with torch.no_grad():
                live, pretrained = m.in_proj(x), F.linear(x, before[name], m.in_proj.base_layer.bias)
            assert torch.equal(live[..., :d], pretrained[..., :d]) and not torch.equal(live, pretrained)


def test_lora_settings_mgclip_cannot_use_are_one_line_errors():
    for bad, match in [("lora.rank=15", "splits lora.rank"), ("lora.targets=[mlp.c_fc]", "keep attn.in_proj")]:
        args = ["train", "--method", "mgclip", "--model", "tiny", "--max-tasks", "1", "--quiet", "--set", bad]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and match in result.output and "Traceback" not in result.output, result.output
    args = ["train", "--method", "mgclip", "--set", "method.mgclip_agent_weight=2", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "mgclip_agent_weight in [0, 1]" in result.output


# -- preset ---------------------------------------------------------------------------------------------------------
def test_preset_applies_mgclips_settings_with_their_source():
    cfg = resolve_config("cifar100", overrides={"method": {"name": "mgclip"}})
    t, m, lora = cfg.train, cfg.method, cfg.lora
    assert (t.optimizer, t.lr, t.epochs, t.batch_size, t.weight_decay) == ("adam", 0.001, 10, 128, 0.0)
    assert (t.schedule, t.warmup_frac, t.grad_clip) == ("cosine", 0.0, 0.0)
    assert (lora.rank, lora.alpha / lora.rank, lora.targets, lora.towers, lora.train_a) == (
        16,
        1 / 8,
        ["attn.in_proj"],
        ["visual", "text"],
        True,
    )
    assert (m.mgclip_drift, m.mgclip_agent_epochs, m.mgclip_agent_lr, m.mgclip_agent_batch_size) == (0.1, 3, 5e-4, 64)
    assert m.mgclip_agent_weight == 0.8 and cfg.data.templates == "single"
    sub = resolve_config("imagenet_sub", overrides={"method": {"name": "mgclip"}})
    assert (sub.train.lr, sub.method.mgclip_agent_lr, sub.method.mgclip_agent_batch_size) == (5e-4, 1e-3, 128)
    imr = resolve_config("imagenet_r", overrides={"method": {"name": "mgclip"}, "train": {"batch_size": 8}})
    assert (imr.train.batch_size, imr.method.mgclip_agent_batch_size) == (8, 32)  # --set still wins
    text = resources.files("segpcl.presets").joinpath("methods", "mgclip.yaml").read_text()
    for line in text.splitlines():
        value = line.split("#")[0].partition(":")[2].strip()
        if value:  # a setting (section headers have none)
            assert "# MG-CLIP " in line or "our reading" in line or "toy:" in line, line


# -- two-task toy runs ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`fixed`: 2 epochs a task (a threshold the drift never reaches); `ruled`: up to 4 epochs, with the threshold
    at the drift after `fixed`'s second epoch, so the rule fires after the third and keeps two."""
    root = tmp_path_factory.mktemp("mgclip")
    fixed = run_training(_cfg(2, mgclip_drift=1e9), out_dir=root / "fixed", progress=False)
    threshold = fixed.metrics["task_info"][0]["nontarget_logit_drift"][1]
    ruled = run_training(_cfg(4, mgclip_drift=threshold), out_dir=root / "ruled", progress=False)
    return fixed, ruled, threshold


def _tensors(run_dir, t: int, name: str = "method.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / f"task_{t:02d}" / name)


def _nontarget_mean(model, cfg, n_classes: int) -> float:
    """The mean over task 1's training images of their mean logit over the other task-1 classes, summed here."""
    stream = build_stream(cfg, model.image_size, None)
    items = [stream.train_set(0)[i] for i in range(len(stream.train_set(0)))]
    tokens = model.tokenize([tpl.format(n) for n in stream.class_names[:n_classes] for tpl in stream.bench.templates])
    with torch.no_grad():
        text = F.normalize(model.text_features(tokens).view(n_classes, -1, model.embed_dim).mean(1), dim=-1)
        logits = (model.logit_scale() * model.image_features(torch.stack([x for x, _ in items])) @ text.T).tolist()
    values = [
        sum(row[c] for c in range(n_classes) if c != y) / (n_classes - 1)
        for row, (_, y) in zip(logits, items, strict=True)
    ]
    return sum(values) / len(values)


def test_drift_rule_keeps_the_epochs_before_the_one_that_drifted(runs):
    fixed, ruled, threshold = runs
    f0, r0 = fixed.metrics["task_info"][0], ruled.metrics["task_info"][0]
    drifts = r0["nontarget_logit_drift"]
    assert drifts[:2] == f0["nontarget_logit_drift"] and len(drifts) == 3  # the same first two epochs, then it fired
    first = next(i for i, d in enumerate(drifts) if d > threshold)
    assert r0["first_task_epochs"] == max(first, 1) == 2 == f0["first_task_epochs"]
    # ... on the pretrained model's mean non-target logit, computed here image by image
    cfg = _cfg()
    pretrained = _nontarget_mean(build_model(cfg, torch.device("cpu")), cfg, 32)
    assert r0["pretrained_nontarget_logit"] == pytest.approx(pretrained, rel=1e-5)
    after_two = _nontarget_mean(segpcl.load_run(fixed.run_dir, task=1).model, cfg, 32)
    assert drifts[1] == pytest.approx(abs(pretrained - after_two) / abs(pretrained), rel=1e-4)
    # the ruled run went back to the weights after two epochs, and the second task also trained two
    for name, value in _tensors(fixed.run_dir, 0, "adapter/adapter_model.safetensors").items():
        assert torch.equal(_tensors(ruled.run_dir, 0, "adapter/adapter_model.safetensors")[name], value), name
    assert r0["steps"] == 3 * 4 and f0["steps"] == 2 * 4  # 64 images a epoch, batch 16
    assert ruled.metrics["task_info"][1]["steps"] == 2 * 2 == fixed.metrics["task_info"][1]["steps"]
    assert ruled.metrics["accuracy_matrix"] == fixed.metrics["accuracy_matrix"]


def test_two_task_run_grows_the_visual_agent(runs):
    _, ruled, _ = runs
    m = ruled.metrics
    assert m["method"] == "mgclip" and m["tasks_completed"] == 2
    a, b = _tensors(ruled.run_dir, 0), _tensors(ruled.run_dir, 1)
    assert a["visual_agent"].shape == (32, 32) and b["visual_agent"].shape == (48, 32)
    assert torch.equal(b["visual_agent"][:32], a["visual_agent"])  # the old rows keep their values
    assert int(b["first_task_epochs"][0]) == 2 and m["task_info"][1]["mean_ce"] > 0
    # the fused prediction is not CLIP's: the engine measured the CLIP branch separately
    assert m["clip_branch"]["accuracy_matrix"] != m["accuracy_matrix"] or m["timings"][1]["eval_clip"] > 0


def test_resume_after_task_one_replays_task_two(runs, tmp_path, monkeypatch):
    _, ruled, threshold = runs
    resumed = cut_in_task_two_then_resume(monkeypatch, _cfg(4, mgclip_drift=threshold), tmp_path / "cut")
    assert resumed["accuracy_matrix"] == ruled.metrics["accuracy_matrix"]
    assert resumed["task_info"][1]["steps"] == 4  # the first task's epoch count came back from the checkpoint
    for name, value in _tensors(ruled.run_dir, 1).items():
        assert torch.equal(_tensors(tmp_path / "cut", 1)[name], value), name


def test_eval_and_predict_reopen_the_run(runs, tmp_path):
    _, ruled, _ = runs
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", str(ruled.run_dir), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == ruled.metrics["accuracy_matrix"][-1]
    result = CliRunner().invoke(main, ["eval", str(ruled.run_dir), "--branch", "clip", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == ruled.metrics["clip_branch"]["accuracy_matrix"][-1]
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["predict", str(ruled.run_dir), str(path), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output.strip().splitlines()[-1])["top"]) == 3


def test_export_writes_the_agent_and_predict_follows_from_the_files(runs, tmp_path):
    from safetensors.torch import load_file

    from segpcl.models.tiny import build_tiny

    _, ruled, _ = runs
    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", str(ruled.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "classes.json").read_text())
    assert "visual_agent" in info["inference"]["method_tensors"]
    agent = load_file(str(out / "method.safetensors"))["visual_agent"]
    assert torch.equal(agent, _tensors(ruled.run_dir, 1)["visual_agent"])

    clip = segpcl.load_run(ruled.run_dir)
    images = torch.rand(4, 3, clip.image_size, clip.image_size)
    plain, _, _ = build_tiny("tiny")  # plain open_clip, weights from the export only
    plain.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    plain.eval()
    prompts = [tpl.format(name) for name in info["class_names"] for tpl in info["templates"]]
    with torch.no_grad():
        f = F.normalize(plain.encode_image(clip.model._normalise(images)), dim=-1)
        text = F.normalize(plain.encode_text(clip.model.tokenize(prompts)), dim=-1)
        text = F.normalize(text.view(len(info["class_names"]), -1, text.shape[-1]).mean(1), dim=-1)
        p = torch.softmax(info["inference"]["logit_scale"] * f @ text.T, dim=-1)
        want = 0.2 * torch.softmax(p, dim=-1) + 0.8 * torch.softmax(f @ F.normalize(agent, dim=-1).T, dim=-1)
    assert torch.allclose(clip.predict(images), want, atol=1e-5)
