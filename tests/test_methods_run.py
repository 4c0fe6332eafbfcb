"""Every method (row of the paper's tables) runs two toy tasks end to end with the tiny model, and each uses the
parts its switches name."""

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
