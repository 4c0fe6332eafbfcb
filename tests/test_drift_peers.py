"""--diagnose works for a peer method (one that is not SeGP-CL's Learner): probe anchors from the text only."""

from segpcl.config import resolve_config
from segpcl.engine.entry import run_training


def test_diagnose_runs_for_a_peer(tmp_path):
    cfg = resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 16, 16], "max_tasks": 2},
            "train": {"epochs": 1, "batch_size": 16, "diagnose": True},
            "method": {"name": "rapf", "k_seed": 1, "pgd_steps": 2},
        },
    )
    cfg.train.epochs = 1
    metrics = run_training(cfg, out_dir=tmp_path / "run", progress=False).metrics
    (entry,) = metrics["drift"]
    assert entry["task"] == 2 and entry["anchors_source"] == "probe"
