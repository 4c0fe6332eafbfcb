"""RAPF (`--method rapf`, method/peers/rapf.py): its core operations against computations written out here, the
step schedule and Adam it trains with, its preset, and a two-task toy run (tiny model) through resume, eval,
predict and export."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from interrupt import cut_in_task_two_then_resume

import segpcl
from segpcl._core import ClassScatter
from segpcl.cli import main
from segpcl.config import RunConfig, resolve_config, validate
from segpcl.engine.build import build_model, build_stream
from segpcl.engine.entry import run_training
from segpcl.engine.loop import lr_factor, make_optimizer
from segpcl.errors import ConfigError
from segpcl.method.peers.rapf import (
    fuse_adapters,
    gaussian_factors,
    hard_pair_hinge,
    hard_pairs,
    sample_gaussian,
    shrink_covariance,
)


def _unit(rows: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d + 2))
    return a @ a.T / d + 1e-4 * np.eye(d)


# -- core operations --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix_bias", [0.0, 0.6])
def test_fusion_matches_the_definition(mix_bias):
    rng = np.random.default_rng(0)
    w_old, w_new = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    u, _, _ = np.linalg.svd(w_old)
    p_new, p_old = u.T @ w_new, u.T @ w_old  # the old W in its own left basis, written as U^T W (not S V^T)
    diff = np.abs(p_new - p_old)
    mask = np.minimum(diff / diff.max() + mix_bias, 1.0)
    want = u @ (mask * p_new + (1 - mask) * p_old)
    got, kept = fuse_adapters(torch.tensor(w_new), torch.tensor(w_old), mix_bias)
    assert np.allclose(got.numpy(), want, atol=1e-10) and kept == pytest.approx(mask.mean())
    assert not np.allclose(want, w_new)  # the fusion did something here


def test_fusion_limits():
    rng = np.random.default_rng(1)
    w_old, w_new = (torch.tensor(rng.normal(size=(5, 5)), dtype=torch.float32) for _ in range(2))
    same, _ = fuse_adapters(w_old.clone(), w_old, 0.6)  # both parts are the old W (up to rounding)
    assert torch.allclose(same, w_old, atol=1e-6)
    whole, kept = fuse_adapters(w_new, w_old, 1.0)  # mix_bias >= 1 keeps every new entry
    assert torch.allclose(whole, w_new, atol=1e-5) and kept == 1.0 and whole.dtype == torch.float32


def test_hard_pairs_match_pairwise_distances():
    text = torch.tensor(_unit(7, 4, 2), dtype=torch.float32)
    n_old, threshold = 4, 1.2
    want = [
        [c, n]
        for c in range(n_old)
        for n in range(n_old, 7)
        if math.dist(text[c].tolist(), text[n].tolist()) < threshold
    ]
    got = hard_pairs(text, n_old, threshold)
    assert got.tolist() == want and 0 < len(want) < n_old * 3


def test_hard_pair_hinge_matches_a_loop():
    feats, text = _unit(9, 5, 3), _unit(6, 5, 4)
    old, new = [0, 1, 2] * 3, [3, 4, 5, 5, 4, 3, 3, 3, 4]
    margin = 0.1
    want = np.mean([max(0.0, f @ text[n] - f @ text[c] + margin) for f, c, n in zip(feats, old, new, strict=True)])
    got = hard_pair_hinge(torch.tensor(feats), torch.tensor(text), torch.tensor(old), torch.tensor(new), margin)
    assert float(got) == pytest.approx(want, rel=1e-12) and want > 0
    empty = hard_pair_hinge(torch.zeros(0, 5), torch.tensor(text), torch.zeros(0).long(), torch.zeros(0).long(), 0.1)
    assert float(empty) == 0.0


def test_gaussian_samples_are_mean_plus_noise_times_the_cholesky_factor():
    d, m = 4, 3
    covs = np.stack([_spd(d, 5), _spd(d, 6)])
    means = np.random.default_rng(7).normal(size=(2, d))
    factors = gaussian_factors(torch.tensor(covs), shrink=False)
    got = sample_gaussian(torch.tensor(means), factors, m, torch.Generator().manual_seed(11))
    z = torch.randn(2, m, d, generator=torch.Generator().manual_seed(11), dtype=torch.float64).numpy()
    want = np.concatenate([means[i] + z[i] @ np.linalg.cholesky(covs[i]).T for i in range(2)])
    assert got.shape == (2 * m, d) and np.allclose(got.numpy(), want, atol=1e-10)


def test_gaussian_samples_have_the_class_statistics():
    d, n = 3, 200_000
    cov, mean = _spd(d, 8), np.array([1.0, -2.0, 0.5])
    x = sample_gaussian(
        torch.tensor(mean)[None], gaussian_factors(torch.tensor(cov)[None], False), n, torch.Generator().manual_seed(0)
    ).numpy()
    assert np.allclose(x.mean(0), mean, atol=0.02) and np.allclose(np.cov(x.T), cov, atol=0.03)


def test_shrinkage_matches_the_definition():
    cov = _spd(4, 9)
    off = cov[~np.eye(4, dtype=bool)]
    want = cov + np.diag(cov).mean() * np.eye(4) + off.mean() * (1 - np.eye(4))
    assert np.allclose(shrink_covariance(torch.tensor(cov)).numpy(), want, atol=1e-12)
    shrunk = gaussian_factors(torch.tensor(cov)[None], shrink=True)[0].numpy()
    assert np.allclose(shrunk @ shrunk.T, want, atol=1e-10)


def test_class_scatter_matches_numpy_across_shards():
    rng = np.random.default_rng(12)
    feats = rng.normal(size=(60, 6)).astype(np.float32) + 3.0
    labels = rng.integers(0, 4, 60)
    merged = ClassScatter(6)
    for part in np.array_split(np.arange(60), 3):  # three ranks' shards
        shard = ClassScatter(6)
        shard.update(feats[part], labels[part])
        s = shard.state_dict()
        merged.add(s["class_ids"], s["sums"], s["scatters"], s["counts"])
    ids, means, covs, counts = ClassScatter.from_state(merged.state_dict()).statistics()
    assert ids.tolist() == sorted(set(labels.tolist()))
    for i, c in enumerate(ids):
        x = feats[labels == c].astype(np.float64)
        assert counts[i] == len(x)
        assert np.allclose(means[i], x.mean(0), atol=1e-12) and np.allclose(covs[i], np.cov(x.T), atol=1e-10)
    with pytest.raises(ValueError, match="scatters must have shape"):
        merged.add([9], np.zeros((1, 6)), np.zeros((1, 6, 5)), [1])
    with pytest.raises(ValueError, match="features must have shape"):
        merged.update(np.zeros((2, 5), np.float32), [0, 1])


# -- optimiser and schedule ---------------------------------------------------------------------------------------
def test_multistep_schedule_is_torchs_multisteplr_per_epoch():
    steps_per_epoch, epochs, milestones = 3, 6, [1, 4]
    fn = lr_factor(steps_per_epoch * epochs, 0.0, milestones, steps_per_epoch, 0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    want = []
    for _ in range(epochs):
        want += [opt.param_groups[0]["lr"]] * steps_per_epoch
        opt.step()
        ref.step()
    assert [fn(s) for s in range(steps_per_epoch * epochs)] == pytest.approx(want)
    assert lr_factor(10, 0.0)(9) < lr_factor(10, 0.0)(1)  # the default is still cosine


def test_adam_and_schedule_options():
    cfg = RunConfig()
    cfg.train.optimizer = "adam"
    assert type(make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)) is torch.optim.Adam
    for key, value, match in [
        ("schedule", "linear", "train.schedule must be one of"),
        ("milestones", [-1], "train.milestones must be"),
        ("gamma", 0.0, "train.gamma must be > 0"),
    ]:
        bad = RunConfig()
        setattr(bad.train, key, value)
        with pytest.raises(ConfigError, match=match):
            validate(bad)


# -- preset ---------------------------------------------------------------------------------------------------------
def test_preset_applies_rapfs_settings_with_their_source():
    cfg = resolve_config("cifar100", overrides={"method": {"name": "rapf"}})
    t, m = cfg.train, cfg.method
    assert (t.optimizer, t.lr, t.epochs, t.batch_size, t.schedule, t.milestones, t.grad_clip) == (
        "adam",
        0.001,
        15,
        100,
        "multistep",
        [4, 10],
        0.0,
    )
    assert (m.rapf_beta, m.rapf_threshold, m.rapf_mix_bias, cfg.data.templates) == (2.0, 0.55, 0.6, "single")
    cub = resolve_config("cub200", overrides={"method": {"name": "rapf"}, "train": {"epochs": 3}})
    assert (cub.train.batch_size, cub.method.rapf_classes_per_step, cub.method.rapf_shrinkage) == (32, 10, True)
    assert cub.train.epochs == 3  # --set still wins
    assert resolve_config("cifar100").train.optimizer == "sgd"  # other methods keep the benchmark's preset
    text = resources.files("segpcl.presets").joinpath("methods", "rapf.yaml").read_text()
    for line in text.splitlines():
        value = line.split("#")[0].partition(":")[2].strip()
        if value:  # a setting (section headers have none)
            assert "# RAPF " in line or "our reading" in line, line


# -- a two-task toy run -------------------------------------------------------------------------------------------
def _cfg(**method):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {
                "max_train_per_class": 3,
                "max_test_per_class": 2,
                "task_sizes": [32, 16, 16],
                "max_tasks": 2,
                "templates": None,
            },
            "train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
            "method": {"name": "rapf", "rapf_threshold": 1.3, **method},
        },
    )


def _tensors(run_dir, t: int) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / f"task_{t:02d}" / "method.safetensors")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_training(_cfg(), out_dir=tmp_path_factory.mktemp("rapf") / "run", progress=False)


def test_two_task_run_trains_the_adapter_with_pseudo_features_and_fusion(run):
    m = run.metrics
    assert m["method"] == "rapf" and m["tasks_completed"] == 2
    first, second = m["task_info"]
    assert (first["steps"], second["steps"]) == (12, 6) and "mean_hinge" not in first  # 96 and 48 images, batch 16
    assert second["hard_pairs"] > 0 and second["mean_hinge"] > 0 and 0 < second["fusion_kept_new"] <= 1
    assert first["classes_with_statistics"] == 32 and second["classes_with_statistics"] == 16
    a, b = _tensors(run.run_dir, 0), _tensors(run.run_dir, 1)
    assert a["class_means"].shape[0] == 32 and b["class_means"].shape[0] == 48
    assert torch.equal(a["class_covs"], b["class_covs"][:32]) and (b["class_counts"] == 3).all()
    assert not torch.equal(a["adapter"], b["adapter"])
    # the statistics are those of the frozen (pretrained, unnormalised) embeddings of each class's training images
    cfg = _cfg()
    model = build_model(cfg, torch.device("cpu"))
    stream = build_stream(cfg, model.image_size, None)
    items = [stream.train_set(1)[i] for i in range(48)]
    images, labels = torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
    with torch.no_grad():
        e = model.base.encode_image(model._normalise(images)).double()
    for c in (32, 40):
        x = e[labels == c]
        assert torch.allclose(b["class_means"][c].double(), x.mean(0), atol=1e-5)
        want = torch.cov(x.T) + 1e-4 * torch.eye(x.shape[1], dtype=torch.float64)
        assert torch.allclose(b["class_covs"][c].double(), want, atol=1e-5)


def test_resume_after_task_one_replays_task_two(run, tmp_path, monkeypatch):
    resumed = cut_in_task_two_then_resume(monkeypatch, _cfg(), tmp_path / "cut")
    assert resumed["accuracy_matrix"] == run.metrics["accuracy_matrix"]
    for key in ("mean_ce", "mean_hinge", "fusion_kept_new", "hard_pairs"):
        assert resumed["task_info"][1][key] == run.metrics["task_info"][1][key], key
    for name, value in _tensors(run.run_dir, 1).items():
        assert torch.equal(_tensors(tmp_path / "cut", 1)[name], value), name


def test_eval_and_predict_reopen_the_run(run, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == run.metrics["accuracy_matrix"][-1]
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--branch", "dual"])
    assert result.exit_code == 2 and "no dual path" in result.output and "Traceback" not in result.output
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(path), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output.strip().splitlines()[-1])["top"]) == 3


def test_export_writes_the_adapter_and_predict_follows_from_the_files(run, tmp_path):
    from safetensors.torch import load_file

    from segpcl.models.tiny import build_tiny

    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", str(run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "classes.json").read_text())
    assert (
        "adapter" in info["inference"]["method_tensors"] and "method.safetensors" in (out / "MODEL_CARD.md").read_text()
    )
    w = load_file(str(out / "method.safetensors"))["adapter"]
    assert torch.equal(w, _tensors(run.run_dir, 1)["adapter"])

    clip = segpcl.load_run(run.run_dir)
    images = torch.rand(4, 3, clip.image_size, clip.image_size)
    plain, _, _ = build_tiny("tiny")  # plain open_clip, weights from the export only
    plain.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    plain.eval()
    prompts = [tpl.format(name) for name in info["class_names"] for tpl in info["templates"]]
    with torch.no_grad():
        e = plain.encode_image(clip.model._normalise(images))
        text = torch.nn.functional.normalize(plain.encode_text(clip.model.tokenize(prompts)), dim=-1)
        text = torch.nn.functional.normalize(text.view(len(info["class_names"]), -1, text.shape[-1]).mean(1), dim=-1)
        z = torch.nn.functional.normalize(e @ w.T, dim=-1)
        want = torch.softmax(info["inference"]["logit_scale"] * z @ text.T, dim=-1)
    assert torch.allclose(clip.predict(images), want, atol=1e-5)
