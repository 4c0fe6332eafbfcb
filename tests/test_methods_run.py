"""Every method (row of the paper's tables) runs two toy tasks end to end with the tiny model, and each uses the
parts its switches name."""

import json

import pytest
import torch

from segpcl.config import resolve_config
from segpcl.engine.trainer import run_training
from segpcl.errors import ConfigError
from segpcl.method.learner import METHODS


def _cfg(method: str, **method_overrides):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [8, 56]},
            "train": {"epochs": 1, "batch_size": 8},
            "method": {"name": method, "k_seed": 2, "pgd_steps": 2, **method_overrides},
        },
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tasks of each method: 8 classes, then the other 56."""
    out = {}
    for method in METHODS:
        root = tmp_path_factory.mktemp(method.replace("+", "_"))
        out[method] = run_training(_cfg(method), out_dir=root / "run", progress=False).metrics
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_two_tasks(runs, method):
    m = runs[method]
    assert m["method"] == method and m["tasks_completed"] == 2
    assert all(0 <= a <= 100 for row in m["accuracy_matrix"] for a in row)
    info = m["task_info"][1]
    switches = METHODS[method]
    if switches.train and switches.acgd and switches.source != "new":
        assert info["anchors"] > 0 and "mean_acgd" in info
        if switches.source == "ref":
            assert info["anchors"] == 256 and "anchor_stats" not in info  # the toy's reference set
        else:
            assert info["anchor_stats"]["anchors"] == info["anchors"]
    if switches.source == "new":
        assert "mean_distill_new" in info
    if switches.tsgr:
        assert info["tsgr_edges"] > 0 and "mean_tsgr" in info
    else:
        assert "mean_tsgr" not in info
    if switches.transfer:
        assert "mean_prototype_shift" in info
    if not switches.train:
        assert "steps" not in info


def test_pgd_anchors_move_and_seed_anchors_do_not(runs):
    pgd = runs["lora+acgd"]["task_info"][1]["anchor_stats"]
    seeds = runs["lora+distill-seeds"]["task_info"][1]["anchor_stats"]
    assert pgd["linf_move_max"] > 0 and seeds["linf_move_max"] == 0
    assert pgd["anchors_per_old_class_min"] == pgd["anchors_per_old_class_max"] == 2  # k_seed per old class
    rnd = runs["lora+distill-randomclass"]["task_info"][1]["anchor_stats"]
    assert rnd["linf_move_max"] == 0 and rnd["anchors_per_old_class_min"] == rnd["anchors_per_old_class_max"] == 2


def test_cliponly_and_pt_row_are_the_same_configuration():
    assert METHODS["segpcl-cliponly"] == METHODS["lora+acgd+tsgr+pt"]


def test_distill_ref_needs_a_reference_off_the_toy(tmp_path):
    from segpcl.engine.reference_images import reference_images

    cfg = _cfg("lora+distill-ref")
    images = reference_images(cfg, 32)
    assert images.shape == (256, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(images, reference_images(cfg, 32))  # fixed seed
    cfg.data.bench = "cifar100"
    with pytest.raises(ConfigError, match="method.reference"):
        reference_images(cfg, 32)


def test_reference_folder_is_read(tmp_path):
    import numpy as np
    from PIL import Image

    from segpcl.engine.reference_images import reference_images

    (tmp_path / "ref" / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(tmp_path / "ref" / "sub" / f"{i}.png")
    (tmp_path / "ref" / "broken.jpg").write_bytes(b"not an image")
    cfg = _cfg("lora+distill-ref", reference=str(tmp_path / "ref"))
    images = reference_images(cfg, 32)
    assert images.shape == (3, 3, 32, 32)  # the unreadable file is skipped


def test_raw_space_prototypes_have_the_visual_width():
    from segpcl.method.learner import Learner
    from segpcl.models.loading import load_clip

    model = load_clip("tiny")
    cfg = _cfg("segpcl").method
    learner = Learner(model, ["a", "b"], ["a photo of a {}."], [2], cfg, text_has_lora=False)
    assert learner.prototypes.bank.dim == model.raw_dim != model.embed_dim
    cfg.prototype_space = "embed"
    learner = Learner(model, ["a", "b"], ["a photo of a {}."], [2], cfg, text_has_lora=False)
    assert learner.prototypes.bank.dim == model.embed_dim


def test_random_class_seeds_differ_from_the_chosen_ones_in_choice_only():
    from segpcl.method.anchors import build_anchors
    from segpcl.method.random_anchors import random_anchors, random_seeds
    from segpcl.models.loading import load_clip

    torch.manual_seed(0)
    model = load_clip("tiny")
    images = torch.rand(40, 3, 32, 32)
    batches = [images[i : i + 16] for i in range(0, 40, 16)]
    text = torch.nn.functional.normalize(torch.randn(6, model.embed_dim), dim=-1)  # 4 old classes, 2 new
    with torch.no_grad():
        chosen = build_anchors(
            model.image_features, batches, text, 4, None, 10.0, k_seed=3, steps=1, eps=0.03, gamma=0.01,
            lambda_p=0.0, pgd=False,
        )  # fmt: skip
        rnd = random_anchors(model.image_features, batches, text, 4, 10.0, k_seed=3, generator=torch.Generator())
    assert torch.equal(torch.bincount(rnd.targets), torch.bincount(chosen.targets))  # 3 per old class each
    assert rnd.targets.tolist() == chosen.targets.tolist()  # class by class, in the same order
    per_class = lambda a: [set(a.seed_indices[a.targets == c].tolist()) for c in range(4)]  # noqa: E731
    assert all(len(s) == 3 for s in per_class(rnd))  # distinct images within a class
    assert per_class(rnd) != per_class(chosen)
    assert torch.equal(rnd.images, images[rnd.seed_indices])  # the images themselves: no PGD
    with torch.no_grad():
        torch.testing.assert_close(rnd.teacher_logits, 10.0 * model.image_features(rnd.images) @ text[:4].T)
    # streamed in batches, the draw is the one over all images at once (only the candidates are kept)
    whole = random_seeds([images], 4, 3, torch.Generator().manual_seed(5), "cpu")[1]
    assert torch.equal(random_seeds(batches, 4, 3, torch.Generator().manual_seed(5), "cpu")[1], whole)
    # uniform: over many draws every image is drawn about equally often (1 class, 1 seed, 10 images)
    counts = torch.zeros(10)
    for seed in range(300):
        _, idx, _ = random_seeds([torch.rand(10, 1)], 1, 1, torch.Generator().manual_seed(seed), "cpu")
        counts[idx] += 1
    assert counts.min() >= 10 and counts.max() <= 55  # expected 30 each


def test_tsgr_from_task_two_leaves_the_first_task_alone():
    from segpcl.method.learner import Learner
    from segpcl.models.loading import load_clip

    model = load_clip("tiny")
    names = [f"class {i}" for i in range(4)]
    for start, has_tsgr in ((1, True), (2, False)):
        cfg = _cfg("lora+acgd+tsgr", tsgr_from_task=start).method
        learner = Learner(model, names, ["a photo of a {}."], [2, 2], cfg, text_has_lora=True)
        assert ("tsgr_edges" in learner.before_task(0, [])) == has_tsgr and (learner.tsgr is not None) == has_tsgr
    with pytest.raises(ConfigError, match="tsgr_from_task"):
        from segpcl.config import validate

        validate(_cfg("segpcl", tsgr_from_task=0))


def test_ablation_runs_the_tsgr_row_as_segpcl_with_the_setting(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import segpcl.analysis.ablation as ablation
    from segpcl.cli import main
    from segpcl.cli.options import _ablation_methods
    from segpcl.engine.run import RunResult

    assert {"lora+distill-randomclass", "segpcl-tsgr-from2"} <= set(_ablation_methods().split(","))
    seen = {}

    def fake_training(cfg, out_dir, progress):
        seen[out_dir.name] = cfg
        metrics = {"seed": cfg.train.seed, "last": 1.0, "avg": 1.0, "forgetting": 0.0, "bwt": 0.0}
        return RunResult(out_dir, metrics)

    monkeypatch.setattr(ablation, "run_training", fake_training)
    args = ["ablate", "--methods", "segpcl,segpcl-tsgr-from2", "--seeds", "1", "--out", str(tmp_path / "a")]
    result = CliRunner().invoke(main, [*args, "--model", "tiny", "--set", "method.tsgr_k=3"])
    assert result.exit_code == 0, result.output
    row, base = seen["segpcl-tsgr-from2-seed1"], seen["segpcl-seed1"]
    assert row.method.name == base.method.name == "segpcl"
    assert (row.method.tsgr_from_task, base.method.tsgr_from_task) == (2, 1)
    assert row.method.tsgr_k == base.method.tsgr_k == 3  # the user's --set applies to the row too
    assert "segpcl-tsgr-from2" in result.output


def test_ablate_pairs_with_the_chosen_baseline(tmp_path, monkeypatch):
    # --baseline names the row the others are paired with; it must be one of the rows
    from click.testing import CliRunner

    from segpcl.analysis import ablation
    from segpcl.analysis.ablation_table import METRICS
    from segpcl.cli import main

    lasts = {"lora": [40.0, 42.0], "segpcl": [45.0, 48.0], "ncm": [43.0, 43.0]}

    def fake_cell(run_dir, ours, cfg, progress):
        return {
            **dict.fromkeys(METRICS, 1.0),
            "seed": cfg.train.seed,
            "last": lasts[cfg.method.name][cfg.train.seed - 1],
        }

    monkeypatch.setattr(ablation, "run_cell", fake_cell)
    args = ["ablate", "--methods", "lora,ncm,segpcl", "--seeds", "1,2", "--model", "tiny", "--out", str(tmp_path / "a")]
    result = CliRunner().invoke(main, [*args, "--baseline", "segpcl"])
    assert result.exit_code == 0, result.output
    assert "Last − segpcl" in result.output
    table = json.loads((tmp_path / "a" / "ablation.json").read_text())
    assert table["baseline"] == "segpcl"
    lora = next(r for r in table["rows"] if r["method"] == "lora")
    assert lora["vs_segpcl"]["last"]["mean"] == -5.5  # (40 - 45 + 42 - 48) / 2, paired by seed
    wrong = CliRunner().invoke(main, [*args, "--baseline", "rapf"])
    assert wrong.exit_code == 2 and "--baseline rapf is not one of --methods" in wrong.output
