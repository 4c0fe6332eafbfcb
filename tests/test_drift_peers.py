"""--diagnose for the peer methods: probe anchors from the text only, measured on the task's final model (after
after_task) and through the method's feature head (RAPF's W), checked against a computation by hand."""

import json
import math

import torch
import torch.nn.functional as F

from segpcl.analysis.drift import drift_diagnostic
from segpcl.config import resolve_config
from segpcl.engine.entry import run_training


class _Features:
    """A stand-in CLIP: normalised flattened pixels as image features, logit scale 10, no raw visual space."""

    raw_dim = None

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.flatten(1), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(10.0)


def _jsd_by_hand(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = (p + q) / 2
    return 0.5 * (p * (p / m).log()).sum(1) + 0.5 * (q * (q / m).log()).sum(1)


def test_feature_heads_are_what_the_drift_is_measured_through():
    gen = torch.Generator().manual_seed(0)
    d, n_old, n_seen = 6, 3, 5
    text = F.normalize(torch.randn(n_seen, d, generator=gen), dim=-1)
    images = torch.randn(12, d, generator=gen)
    labels = torch.arange(12) % n_old
    w = torch.randn(d, d, generator=gen)

    def head(f):
        return F.normalize(f @ w.T, dim=-1)

    model = _Features()
    same = drift_diagnostic(model, model, text, text, n_old, [(images, labels)], n_boot=50)
    assert same["groups"]["old"]["jsd"] == 0.0  # one model, no head: nothing drifts
    entry = drift_diagnostic(model, model, text, text, n_old, [(images, labels)], n_boot=50, heads=(None, head))
    f_t, f_s = F.normalize(images, dim=-1), head(F.normalize(images, dim=-1))
    expected = _jsd_by_hand(
        torch.softmax(10 * f_t @ text[:n_old].T, dim=1), torch.softmax(10 * f_s @ text[:n_old].T, dim=1)
    )
    assert math.isclose(entry["groups"]["old"]["jsd"], float(expected.mean()), rel_tol=1e-5)
    assert abs(entry["groups"]["old"]["visual"]) < 1e-6  # the raw visual space is the frozen tower's: no head there


def _two_task_run(tmp_path, name: str):
    cfg = resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 16, 16], "max_tasks": 2},
            "train": {"epochs": 1, "batch_size": 16, "diagnose": True},
            "method": {"name": name, "k_seed": 1, "pgd_steps": 2},
        },
    )
    cfg.train.epochs = 1
    return run_training(cfg, out_dir=tmp_path / name, progress=False).metrics


def test_diagnose_runs_for_a_peer_and_sees_rapf_drift(tmp_path):
    metrics = _two_task_run(tmp_path, "rapf")
    (entry,) = metrics["drift"]
    assert entry["task"] == 2 and entry["anchors_source"] == "probe"
    # RAPF leaves both towers frozen: all its drift is in W (3 small steps here), which the diagnostic reads (without
    # the head it reads exactly 0: one model, identical features)
    assert entry["groups"]["old"]["jsd"] > 1e-7 and abs(entry["groups"]["old"]["visual"]) < 1e-6
    assert json.loads((tmp_path / "rapf" / "metrics.json").read_text())["drift"] == metrics["drift"]


def test_zscl_drift_is_measured_on_the_weight_average(tmp_path, monkeypatch):
    """The diagnostic runs after after_task: the student it measures is the model ZSCL ends the task with."""
    from segpcl.analysis import drift
    from segpcl.method.peers.zscl import ZSCL

    seen = {}
    measure = drift.drift_diagnostic

    def spy(teacher, student, *args, **kwargs):
        seen["student"] = [p.detach().clone() for p in student.parameters()]
        return measure(teacher, student, *args, **kwargs)

    after = ZSCL.after_task

    def after_spy(self, t, batches):
        info = after(self, t, batches)
        seen["after_task"] = [p.detach().clone() for p in self.model.parameters()]
        return info

    monkeypatch.setattr(drift, "drift_diagnostic", spy)
    monkeypatch.setattr(ZSCL, "after_task", after_spy)
    _two_task_run(tmp_path, "zscl")
    assert len(seen["student"]) == len(seen["after_task"])
    assert all(torch.equal(a, b) for a, b in zip(seen["student"], seen["after_task"], strict=True))
