"""End-to-end runs of the engine on a reduced toy stream with the tiny model (seconds each)."""

import json

import pytest
import torch
from click.testing import CliRunner

from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.trainer import run_training
from segpcl.errors import ConfigError, TrainingError

REDUCED = [
    "--model",
    "tiny",
    "--epochs",
    "1",
    "--set",
    "data.max_train_per_class=3",
    "--set",
    "data.max_test_per_class=2",
    "--set",
    "data.task_sizes=[32,16,16]",
    "--set",
    "method.k_seed=1",
    "--set",
    "method.pgd_steps=2",
    "--set",
    "train.batch_size=16",
    "--quiet",
]


def _reduced_cfg(method="segpcl", **train):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 16, 16]},
            "train": {"epochs": 1, "batch_size": 16, **train},
            "method": {"name": method, "k_seed": 1, "pgd_steps": 2},
        },
    )


def test_cli_train_writes_a_complete_run_dir(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), *REDUCED])
    assert result.exit_code == 0, result.output
    assert "Last" in result.output
    for name in ["config.yaml", "metrics.json", "log.txt", "checkpoints/LATEST", "plots/accuracy.svg"]:
        assert (out / name).is_file(), name
    import xml.etree.ElementTree as ET

    svg = ET.parse(out / "plots" / "accuracy.svg").getroot()
    assert svg.tag.endswith("svg") and len([e for e in svg.iter() if e.tag.endswith("polyline")]) == 3
    assert len([e for e in svg.iter() if e.tag.endswith("circle")]) == 3 + 2 + 1 + 3  # every point, the last too
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks_completed"] == 3 and len(metrics["accuracy_matrix"]) == 3
    assert [len(r) for r in metrics["accuracy_matrix"]] == [1, 2, 3]
    assert metrics["method"] == "segpcl" and "environment" in metrics
    assert metrics["task_info"][1]["anchors"] == 32 and metrics["task_info"][1]["tsgr_edges"] > 0
    for t in range(3):
        task = out / "checkpoints" / f"task_{t:02d}"
        assert (task / "adapter" / "adapter_config.json").is_file()
        assert (task / "prototypes.npz").is_file() and (task / "state.json").is_file()


def test_resume_after_a_completed_task_gives_the_same_metrics(tmp_path, monkeypatch):
    full = run_training(_reduced_cfg(), out_dir=tmp_path / "full", progress=False).metrics

    import segpcl.engine.run as trainer

    calls = {"n": 0}
    original = trainer.evaluate_stream

    def crash_in_task_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during task 2, after task 1's checkpoint
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_stream", crash_in_task_two)
    with pytest.raises(KeyboardInterrupt):
        run_training(_reduced_cfg(), out_dir=tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / "checkpoints" / "LATEST").read_text() == "task_00"
    monkeypatch.setattr(trainer, "evaluate_stream", original)
    resumed = run_training(resume=tmp_path / "cut", progress=False).metrics
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["last"] == full["last"]


def test_nan_loss_stops_with_a_clear_error_and_keeps_finished_tasks(tmp_path, monkeypatch):
    from segpcl.method import learner as learner_mod

    original = learner_mod.Learner.training_loss

    def nan_in_task_two(self, images, labels):
        loss, parts = original(self, images, labels)
        return (loss * float("nan"), parts) if self.task == 1 else (loss, parts)

    monkeypatch.setattr(learner_mod.Learner, "training_loss", nan_in_task_two)
    with pytest.raises(TrainingError, match="resume"):
        run_training(_reduced_cfg(), out_dir=tmp_path / "nan", progress=False)
    assert (tmp_path / "nan" / "checkpoints" / "task_00" / "state.json").is_file()
    assert json.loads((tmp_path / "nan" / "metrics.json").read_text())["tasks_completed"] == 1


def test_cli_prints_user_errors_without_traceback(tmp_path):
    result = CliRunner().invoke(main, ["train", "--bench", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown benchmark 'nope'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["train", "--method", "magic", "--model", "tiny", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "unknown method" in result.output


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run_training(_reduced_cfg("zeroshot"), out_dir=tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        run_training(_reduced_cfg("zeroshot"), out_dir=tmp_path / "r", progress=False)


def test_zeroshot_trains_nothing_and_lora_changes_weights(tmp_path):
    zs = run_training(_reduced_cfg("zeroshot"), out_dir=tmp_path / "zs", progress=False).metrics
    assert all("steps" not in info for info in zs["task_info"])
    lora = run_training(_reduced_cfg("lora"), out_dir=tmp_path / "lora", progress=False).metrics
    assert lora["task_info"][0]["steps"] > 0
    assert torch.tensor(lora["accuracy_matrix"][-1]).numel() == 3


def test_same_results_with_torch_and_triton_interpreter_backends(tmp_path, monkeypatch):
    """DPGD and ACGD through the Triton kernels (interpreted on CPU) give the run the torch reference gives."""
    from segpcl.kernels import backend

    results = {}
    for name in ("torch", "triton"):
        monkeypatch.setenv("SEGPCL_KERNELS", name)
        if name == "triton" and backend("cpu") != "triton-interpreter":
            pytest.skip("the Triton interpreter is not available")
        cfg = _reduced_cfg()
        cfg.data.task_sizes, cfg.data.max_train_per_class = [48, 16], 2
        cfg.method.tau = 1.0  # at tau = 20 the KL of a barely trained toy is ~1e-7, all float rounding
        results[name] = run_training(cfg, out_dir=tmp_path / name, progress=False).metrics
    assert results["triton"]["accuracy_matrix"] == results["torch"]["accuracy_matrix"]
    for a, b in zip(results["triton"]["task_info"], results["torch"]["task_info"], strict=True):
        assert a.get("mean_acgd", 0) == pytest.approx(b.get("mean_acgd", 0), rel=1e-4, abs=1e-7)


@pytest.mark.gpu
def test_reduced_run_on_cuda_with_bf16_and_triton_kernels(tmp_path):
    from segpcl.kernels import backend

    assert backend("cuda") == "triton"
    cfg = _reduced_cfg(device="cuda")
    cfg.model.precision = "bf16"
    metrics = run_training(cfg, out_dir=tmp_path / "gpu", progress=False).metrics
    assert metrics["environment"]["device"].startswith("cuda")
    assert metrics["tasks_completed"] == 3 and metrics["task_info"][1]["mean_acgd"] >= 0


def test_ablate_writes_the_table_over_methods_and_seeds(tmp_path):
    args = ["ablate", "--methods", "lora,segpcl", "--seeds", "1,2", "--out", str(tmp_path / "abl"), *REDUCED]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert set(rows) == {"lora", "segpcl"} and table["seeds"] == [1, 2]
    for row in rows.values():
        assert row["seeds"] == [1, 2] and len(row["last"]) == 2
        assert row["last_mean"] == pytest.approx(sum(row["last"]) / 2)
    markdown = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| segpcl |" in markdown and "±" in markdown
    # a second call reuses the finished runs instead of training again
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and json.loads((tmp_path / "abl" / "ablation.json").read_text()) == table


def test_zero_shot_retention_is_measured_before_and_after(tmp_path):
    from fakedata import make_split_imagefolder

    folder = make_split_imagefolder(tmp_path / "pets", ["cat", "dog", "golden_retriever"], per_split=(1, 2))
    cfg = _reduced_cfg()
    cfg.data.zs_eval = {"pets": str(folder)}
    metrics = run_training(cfg, out_dir=tmp_path / "zs", progress=False).metrics
    pets = metrics["zero_shot_retention"]["pets"]
    assert set(pets) == {"before", "after", "delta"}
    assert pets["delta"] == pytest.approx(pets["after"] - pets["before"])
    assert 0 <= pets["before"] <= 100


def test_resume_takes_new_learning_settings_but_not_a_new_method(tmp_path):
    out = tmp_path / "run"
    run_training(_reduced_cfg("lora"), out_dir=out, progress=False)
    refused = CliRunner().invoke(main, ["train", "--resume", str(out), "--method", "segpcl"])
    assert refused.exit_code == 2 and "cannot change when resuming" in refused.output
    ok = CliRunner().invoke(main, ["train", "--resume", str(out), "--set", "train.lr=1e-5", "--quiet"])
    assert ok.exit_code == 0, ok.output
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 1e-5


def test_ablate_rejects_bad_seed_lists():
    for seeds in ["1,x", ","]:
        result = CliRunner().invoke(main, ["ablate", "--seeds", seeds, "--model", "tiny"])
        assert result.exit_code == 2 and "error:" in result.output
