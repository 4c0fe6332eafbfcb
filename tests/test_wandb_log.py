"""`--log wandb`, offline: a 2-task tiny run logs its losses and accuracies into <run>/wandb, and `--resume`
continues the same wandb run (same id, the step axis going on). Skipped only where wandb is not installed (the
dev extra installs it); without it, `--log wandb` is one line saying what to install."""

from __future__ import annotations

import json
import struct
import sys

import pytest
from click.testing import CliRunner

from segpcl.cli import main
from segpcl.engine.wandb_log import RUN_ID_FILE, logged_in, wandb_mode

REDUCED = [
    "--model", "tiny", "--epochs", "1", "--device", "cpu", "--quiet", "--log", "wandb",
    "--set", "data.max_train_per_class=2", "--set", "data.max_test_per_class=1",
    "--set", "data.task_sizes=[32,32]", "--set", "method.k_seed=1", "--set", "method.pgd_steps=1",
    "--set", "train.batch_size=16",
]  # fmt: skip


def _history(path) -> list[dict]:
    """The `history` records (one per wandb.log call) of a .wandb file: a LevelDB-style log (7-byte file header,
    32 KiB blocks of chunks: crc32 u32, length u16, type u8 (1 full, 2 first, 3 middle, 4 last)) of protobuf
    Records, as wandb writes it offline."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, records, part = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                records.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return records


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No login, no WANDB_MODE: what a user without a wandb account has."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))


def test_mode_is_offline_without_a_login(offline, tmp_path, monkeypatch):
    assert not logged_in() and wandb_mode() == "offline"
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert logged_in() and wandb_mode() is None  # logged in: wandb decides (online)
    (tmp_path / "home" / ".netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() is None  # the user's own choice stands


def test_log_wandb_missing_is_one_line(offline, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), *REDUCED])
    assert result.exit_code == 2, result.output
    assert "pip install 'segpcl[wandb]'" in result.output and "Traceback" not in result.output
    assert not out.exists()  # a failed start leaves nothing behind


def test_two_tasks_log_offline_and_resume_continues_the_same_run(offline, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    first = CliRunner().invoke(main, ["train", "--out", str(out), "--max-tasks", "1", *REDUCED])
    assert first.exit_code == 0, first.output + repr(first.exception)
    run_id = (out / "wandb" / RUN_ID_FILE).read_text().strip()
    (one,) = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    logged = _history(one / f"run-{run_id}.wandb")
    steps = [r["step"] for r in logged if "loss/total" in r]
    tasks = [r for r in logged if "accuracy/seen" in r]
    assert steps == list(range(1, len(steps) + 1)) and len(tasks) == 1 and tasks[0]["task"] == 1

    again = CliRunner().invoke(main, ["train", "--resume", str(out), "--max-tasks", "2", "--quiet"])
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert (out / "wandb" / RUN_ID_FILE).read_text().strip() == run_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)  # one wandb run, logged twice
    second = _history(sorted(set(runs) - {one})[0] / f"run-{run_id}.wandb")
    resumed_steps = [r["step"] for r in second if "loss/total" in r]
    assert resumed_steps and resumed_steps[0] == steps[-1] + 1  # the step axis goes on
    task2 = next(r for r in second if "accuracy/seen" in r)
    metrics = json.loads((out / "metrics.json").read_text())
    assert task2["task"] == 2 and task2["accuracy/seen"] == pytest.approx(metrics["seen_accuracy"][1])
    assert "accuracy/task2" in task2 and "summary/last" in task2
