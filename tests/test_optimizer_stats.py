"""What the optimiser does per task (mean pre-clip gradient norm, share of clipped steps) in metrics.json,
metrics.csv and TensorBoard, and the divergence warning."""

from __future__ import annotations

import csv
import logging

import pytest
import torch

from segpcl.config import RunConfig, resolve_config
from segpcl.engine import distributed
from segpcl.engine.logs import RunLogger
from segpcl.engine.loop import divergence_warning, optimizer_step


def test_optimizer_step_returns_the_norm_before_clipping():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    norm = optimizer_step((w * torch.tensor([3.0, 4.0])).sum(), opt, [w], grad_clip=1.0)
    assert float(norm) == pytest.approx(5.0)  # |(3, 4)|, read before the clip
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]), rtol=0, atol=1e-5)  # the clipped step
    norm = optimizer_step((w * torch.tensor([0.3, 0.4])).sum(), opt, [w], grad_clip=0.0)  # 0: no clipping
    assert float(norm) == pytest.approx(0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([-0.9, -1.2]), rtol=0, atol=1e-5)


def test_divergence_warning_names_the_settings():
    cfg = RunConfig()
    cfg.train.lr, cfg.train.grad_clip = 0.5, 1.0
    rising = [1.0] * 10 + [5.0] * 80 + [20.0] * 10
    msg = divergence_warning(rising, 0.5, 0.8, cfg, 2)
    assert msg.startswith("task 3 may have diverged") and "from 1 " in msg and "to 20 " in msg
    assert "train.lr (now 0.5)" in msg and "train.grad_clip (now 1)" in msg and "--set train.lr=0.05" in msg
    assert divergence_warning([4.0, 3.0, 2.0, 9.0], 0.9, 0.8, cfg, 0) is None  # rose, but not 10x
    assert divergence_warning([3.0] * 12, 0.9, 50.0, cfg, 0) is None  # not every step clipped
    msg = divergence_warning([3.0] * 12, 1.0, 50.0, cfg, 0)
    assert "at every one of its 12 steps (mean 50 before clipping)" in msg
    assert divergence_warning([3.0] * 12, 1.0, 2.2, cfg, 0) is None  # every step, by 2.2x: the toy's late tasks
    assert divergence_warning([3.0] * 9, 1.0, 50.0, cfg, 0) is None  # too few steps to say
    cfg.train.grad_clip = 0.0
    assert divergence_warning([3.0] * 12, 1.0, 50.0, cfg, 0) is None  # clipping off


def _tiny(lr: float):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 32], "max_tasks": 1},
            "train": {"epochs": 2, "batch_size": 16, "lr": lr},  # 12 steps
            "method": {"name": "lora"},
        },
    )


def test_a_learning_rate_far_too_large_is_reported(tmp_path, caplog):
    from segpcl.engine.trainer import run_training

    with caplog.at_level(logging.WARNING, logger="segpcl"):
        bad = run_training(_tiny(1e9), out_dir=tmp_path / "bad", progress=False).metrics
    info = bad["task_info"][0]
    assert info["clipped_share"] == 1.0 and info["mean_grad_norm"] > 1.0
    assert "train.lr (now 1e+09)" in info["warning"] and "train.grad_clip" in info["warning"]
    assert any("task 1 may have diverged" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="segpcl"):
        good = run_training(_tiny(1e-3), out_dir=tmp_path / "good", progress=False).metrics
    info = good["task_info"][0]
    assert "warning" not in info and 0 <= info["clipped_share"] < 1 and info["mean_grad_norm"] > 0
    assert not any("diverged" in r.getMessage() for r in caplog.records)
    rows = list(csv.DictReader((tmp_path / "good" / "metrics.csv").read_text().splitlines()))
    assert float(rows[0]["clipped_share"]) == pytest.approx(info["clipped_share"], abs=1e-4)
    assert float(rows[0]["mean_grad_norm"]) == pytest.approx(info["mean_grad_norm"], rel=1e-3)


def test_tensorboard_gets_the_task_statistics(tmp_path):
    class Recorder:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = (value, step)

        def add_text(self, *args):
            pass

        def flush(self):
            pass

    logger = RunLogger(tmp_path)
    logger.writer = Recorder()
    metrics = {
        "accuracy_matrix": [[50.0], [40.0, 60.0]],
        "seen_accuracy": [50.0, 50.0],
        "task_info": [{"mean_grad_norm": 2.0, "clipped_share": 1.0}, {"mean_grad_norm": 0.5, "clipped_share": 0.25}],
    }
    logger.on_task(1, metrics)
    assert logger.writer.scalars["train/grad_norm_mean"] == (0.5, 2)
    assert logger.writer.scalars["train/clipped_share"] == (0.25, 2)


def test_task_statistics_are_averaged_over_ranks():
    info = {"steps": 4, "skipped_images": 1, "mean_ce": 1.5, "mean_grad_norm": 2.0, "clipped_share": 0.5}
    assert distributed.reduce_task_info(info) == {
        "skipped_images": 1,
        "clipped_share": 0.5,
        "mean_ce": 1.5,
        "mean_grad_norm": 2.0,
    }  # one process: the values themselves (several: the mean over ranks, as for the losses)
