"""Fault injection on run directories (issue 13): kill -9 at several points then --resume, damaged checkpoint
files, a missing LATEST, concurrent runs on one folder, ablate with changed settings, and a table of bad inputs
that must each give exit status 2, one line on stderr, no traceback and no change to an existing run.

Tiny model, reduced toy stream (2 tasks), CPU; the runs are shared through module-scoped fixtures."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import segpcl
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.checkpoint import RunDir, write_manifest
from segpcl.engine.trainer import run_training
from segpcl.errors import ConfigError

OVERRIDES = {
    "model": {"arch": "tiny"},
    "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 32]},
    "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
    "method": {"name": "segpcl", "k_seed": 1, "pgd_steps": 1},
}
SETS = [
    "--model", "tiny", "--epochs", "1", "--device", "cpu",
    "--set", "data.max_train_per_class=3", "--set", "data.max_test_per_class=2",
    "--set", "data.task_sizes=[32,32]", "--set", "method.k_seed=1", "--set", "method.pgd_steps=1",
    "--set", "train.batch_size=16", "--quiet",
]  # fmt: skip


def _cfg(**method):
    overrides = copy.deepcopy(OVERRIDES)
    overrides["method"].update(method)
    return resolve_config("toy", overrides=overrides)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(segpcl.__file__).parents[1]), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_INTERPRET", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


# A training subprocess that SIGKILLs itself at a chosen point (deterministic "kill -9").
KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(2)
    from segpcl.config import resolve_config
    import segpcl.engine.checkpoint as ck
    import segpcl.engine.run as tr
    from segpcl.engine.entry import run_training

    point, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    calls = {"eval": 0}
    if point in ("first_task", "during_task"):
        original_eval = tr.evaluate_stream
        def evaluate_seen(*a, **k):
            calls["eval"] += 1
            if calls["eval"] == (1 if point == "first_task" else 2):
                die()  # task trained, not yet evaluated or saved
            return original_eval(*a, **k)
        tr.evaluate_stream = evaluate_seen
    elif point == "checkpoint_write":
        original_manifest = ck.write_manifest
        def write_manifest(folder, identity=None, run_files=None):
            if "task_01" in folder.name:
                die()  # the task's files are in the temporary folder, the manifest is not
            return original_manifest(folder, identity, run_files)
        ck.write_manifest = write_manifest
    elif point == "before_latest":
        original_write = ck.atomic_write_text
        def atomic_write_text(path, text):
            if path.name == "LATEST" and text == "task_01":
                die()  # task_01 moved into place, LATEST still names task_00
            return original_write(path, text)
        ck.atomic_write_text = atomic_write_text
    elif point == "between_tasks":
        original_save = ck.RunDir.save_task
        def save_task(self, t, contents, identity=None):
            final = original_save(self, t, contents, identity)
            if t == 0:
                die()  # checkpoint complete, metrics.json not yet rewritten, task 2 not started
            return final
        ck.RunDir.save_task = save_task
    run_training(resolve_config("toy", overrides=overrides), out_dir=out, progress=False)
    """
)
KILL_POINTS = ["during_task", "checkpoint_write", "before_latest", "between_tasks"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One uninterrupted run (the reference) in a folder the tests copy from."""
    root = tmp_path_factory.mktemp("base")
    result = run_training(_cfg(), out_dir=root / "run", progress=False)
    return root / "run", result.metrics


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Training subprocesses killed with SIGKILL at each point (started together)."""
    root = tmp_path_factory.mktemp("killed")
    procs = {
        point: subprocess.Popen(
            [sys.executable, "-c", KILLER, point, str(root / point), json.dumps(OVERRIDES)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for point in KILL_POINTS
    }
    for point, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, err.decode()[-2000:])
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _snapshot(root: Path) -> dict:
    """Every file under root with its sha256 (the lock file's pid aside)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _one_line_error(result, *needles: str) -> str:
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output and "ERROR:" not in err, result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_then_resume_gives_the_uninterrupted_metrics(killed, base, point):
    run = killed / point
    expected_latest = {"during_task": "task_00", "checkpoint_write": "task_00", "before_latest": "task_00"}
    expected_latest["between_tasks"] = "task_00"
    latest = run / "checkpoints" / "LATEST"
    assert (latest.read_text() if latest.exists() else None) == expected_latest[point]
    # the lock of the dead process is taken over; a half-written checkpoint folder is discarded
    resumed = run_training(resume=run, progress=False).metrics
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    full = base[1]
    assert resumed["tasks_completed"] == 2
    # Exact equality: every task reseeds from (seed, task). If this one fails by ~1e-6 only, it is the float
    # drift of resumed runs that the lead is fixing (LoRA deltas added/subtracted on each forward).
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["seen_accuracy"] == full["seen_accuracy"] and resumed["last"] == full["last"]
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["accuracy_matrix"] == full["accuracy_matrix"]


CHECKPOINT_FILES = ["adapter/adapter_model.safetensors", "adapter/adapter_config.json", "prototypes.npz"]
CHECKPOINT_FILES += ["state.json", "MANIFEST.json"]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_each_truncated_checkpoint_file_is_named_with_the_way_back(base, tmp_path, name):
    run = _copy(base[0], tmp_path / "run")
    path = run / "checkpoints" / "task_01" / name
    assert path.is_file(), name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _snapshot(run)
    line = _one_line_error(_cli("train", "--resume", run), "task_01", "--from-task 1")
    assert "last intact checkpoint is task 1" in line
    assert _snapshot(run) == before


def test_resume_from_the_last_intact_task_replays_the_rest_exactly(base, tmp_path):
    run = _copy(base[0], tmp_path / "run")
    (run / "checkpoints" / "task_01" / "prototypes.npz").write_bytes(b"PK\x03\x04 not a zip")
    result = _cli("train", "--resume", run, "--from-task", "1", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy_matrix"] == base[1]["accuracy_matrix"]  # exact-resume (see the kill test)
    assert (run / "checkpoints" / "LATEST").read_text() == "task_01"


def test_forged_manifest_still_gives_one_line(base, tmp_path):
    """Garbage in state.json / a truncated adapter with a manifest rewritten to match: still no traceback."""
    for name, data in [("state.json", b"{ not json"), ("adapter/adapter_model.safetensors", b"\x10\x00")]:
        run = _copy(base[0], tmp_path / name.replace("/", "_"))
        folder = run / "checkpoints" / "task_01"
        (folder / name).write_bytes(data)
        write_manifest(folder, json.loads((folder / "MANIFEST.json").read_text())["identity"])
        _one_line_error(_cli("train", "--resume", run, "--quiet"), "task_01", "cannot be read", "--from-task 1")


def test_missing_latest_uses_the_highest_verified_checkpoint_or_stops(base, tmp_path):
    run = _copy(base[0], tmp_path / "ok")
    (run / "checkpoints" / "LATEST").unlink()
    metrics = run_training(resume=run, progress=False).metrics  # nothing left to train: task 2 verified
    assert metrics["accuracy_matrix"] == base[1]["accuracy_matrix"] and metrics["tasks_completed"] == 2
    assert (run / "checkpoints" / "LATEST").read_text() == "task_01"

    bad = _copy(base[0], tmp_path / "bad")
    (bad / "checkpoints" / "LATEST").unlink()
    (bad / "checkpoints" / "task_01" / "state.json").write_text("{}")
    before = _snapshot(bad)
    _one_line_error(_cli("train", "--resume", bad), "LATEST", "is missing", "tasks 1, 2", "--from-task 1")
    assert _snapshot(bad) == before

    gone = _copy(base[0], tmp_path / "gone")
    shutil.rmtree(gone / "checkpoints")
    (gone / "checkpoints").mkdir()
    _one_line_error(_cli("train", "--resume", gone), "metrics.json says 2 tasks", "--from-task 0")


def test_two_runs_on_one_folder(base, tmp_path):
    """A live holder refuses a second run or resume with its pid; a killed holder's lock is taken over."""
    run = _copy(base[0], tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from segpcl.engine.checkpoint import RunDir; r = RunDir(sys.argv[1]); r.acquire(); "
            "print('locked', flush=True); time.sleep(120)",
            str(run),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        before = _snapshot(run)
        _one_line_error(_cli("train", "--resume", run), f"process {holder.pid}")
        _one_line_error(_cli("train", "--out", run, *SETS), f"process {holder.pid}")
        assert _snapshot(run) == before
        fresh = tmp_path / "fresh"
        lock = RunDir(fresh)
        fresh.mkdir()
        lock.acquire()  # a second open of the lock file conflicts even within one process
        with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}"):
            run_training(_cfg(), out_dir=fresh, progress=False)
        lock.release()
    finally:
        holder.kill()
        holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)  # stale: its owner is dead
    metrics = run_training(resume=run, progress=False).metrics
    assert metrics["accuracy_matrix"] == base[1]["accuracy_matrix"]


def test_ablate_reuses_only_runs_of_the_same_settings(tmp_path):
    out = tmp_path / "abl"
    args = ["ablate", "--methods", "zeroshot", "--seeds", "1", "--out", out, *SETS]
    first = _cli(*args)
    assert first.exit_code == 0, first.output
    table = json.loads((out / "ablation.json").read_text())
    before = _snapshot(out)
    again = _cli(*args)  # same settings: reused, nothing rewritten but the table
    assert again.exit_code == 0 and json.loads((out / "ablation.json").read_text())["rows"] == table["rows"]
    assert _snapshot(out / "zeroshot-seed1") == {
        k[15:]: v for k, v in before.items() if k.startswith("zeroshot-seed1/")
    }
    import yaml

    beta = yaml.safe_load((out / "zeroshot-seed1" / "config.yaml").read_text())["method"]["beta"]
    changed = [*args, "--set", "method.beta=0.3"]
    line = _one_line_error(_cli(*changed), "zeroshot-seed1", f"method.beta: {beta!r} -> 0.3", "--fresh")
    assert "nothing was run" in line and _snapshot(out) == before
    fresh = _cli(*changed, "--fresh")
    assert fresh.exit_code == 0, fresh.output
    new = [p.name for p in out.iterdir() if p.name.startswith("zeroshot-seed1-")]
    assert len(new) == 1
    assert yaml.safe_load((out / new[0] / "config.yaml").read_text())["method"]["beta"] == 0.3
    assert yaml.safe_load((out / "zeroshot-seed1" / "config.yaml").read_text())["method"]["beta"] == beta
    assert _cli(*changed, "--fresh").exit_code == 0  # the --fresh run is found again by its settings
    assert len([p for p in out.iterdir() if p.name.startswith("zeroshot-seed1-")]) == 1


def test_out_safety(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: own\n")
    before = _snapshot(mine)
    _one_line_error(_cli("train", "--out", mine, *SETS), "not empty and not a segpcl run")
    assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
    (tmp_path / "file").write_text("x")
    _one_line_error(_cli("train", "--out", tmp_path / "file", *SETS), "not a folder")
    _one_line_error(_cli("train", "--out", "/proc/segpcl-test/x", *SETS), "cannot create the run directory")
    # a failed start (the data is missing) leaves nothing behind, and says so before any weights load
    missing = tmp_path / "new" / "run"
    line = _one_line_error(_cli("train", "--bench", "cub200", "--out", missing, "--quiet"), "cub200")
    assert "data" in line.lower() and "weights" not in line and "pretrained" not in line
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(_cli("train", "--out", empty, "--method", "magic", *SETS), "unknown method")
    assert empty.is_dir() and not list(empty.iterdir())


def _bad_resume_inputs(tmp: Path) -> list[tuple[list, tuple]]:
    (tmp / "cfg.yaml").write_text("train: {epochs: 2}\n")
    return [
        (["--epochs", "0"], ("--epochs",)),
        (["--set", "train.epochs=0"], ("train.epochs",)),
        (["--seed", "3"], ("--seed", "cannot change")),
        (["--set", "train.seed=3"], ("train.seed: 0 -> 3",)),
        (["--set", "method.name=lora"], ("method.name: 'segpcl' -> 'lora'",)),
        (["--method", "lora"], ("--method",)),
        (["--set", "model.arch=ViT-B-16"], ("model.arch",)),
        (["--model", "ViT-B-16"], ("--model",)),
        (["--set", "model.pretrained=/x.pt"], ("model.pretrained",)),
        (["--set", "data.task_sizes=[16,16,32]"], ("data.task_sizes",)),
        (["--set", "data.initial=8"], ("data.initial",)),
        (["--initial", "8"], ("--initial",)),
        (["--increment", "8"], ("--increment",)),
        (["--set", "data.class_order_seed=7"], ("data.class_order_seed",)),
        (["--set", "data.max_train_per_class=5"], ("data.max_train_per_class",)),
        (["--set", "lora.rank=4"], ("lora.rank",)),
        (["--bench", "cifar100"], ("--bench",)),
        (["--zs-eval", "pets=/tmp"], ("--zs-eval",)),
        (["--download"], ("--download",)),
        (["--config", tmp / "cfg.yaml"], ("--config",)),
        (["--out", tmp / "elsewhere"], ("--out",)),
        (["--class-order", tmp / "cfg.yaml"], ("--class-order",)),
        (["--from-task", "7"], ("--from-task 7", "does not exist")),
        (["--set", "nope.key=1"], ("unknown config key",)),
        (["--workers", "-1"], ("--workers",)),
    ]


BAD_FRESH = [
    (["--initial", "0"], ("--initial",)),
    (["--increment", "0"], ("--increment",)),
    (["--set", "data.initial=0"], ("data.initial",)),
    (["--set", "data.increment=0"], ("data.increment",)),
    (["--set", "data.task_sizes=[0,64]"], ("data.task_sizes",)),
    (["--set", "data.task_sizes=[]"], ("data.task_sizes",)),
    (["--epochs", "0"], ("--epochs",)),
    (["--set", "train.epochs=0"], ("train.epochs",)),
    (["--seed", "99999999999999999999"], ("--seed",)),
    (["--seed", "-1"], ("--seed",)),
    (["--set", "train.seed=99999999999999999999"], ("train.seed",)),
    (["--set", "train.seed=-5"], ("train.seed",)),
    (["--workers", "-1"], ("--workers",)),
    (["--set", "data.num_workers=-2"], ("data.num_workers",)),
    (["--set", "data.max_train_per_class=0"], ("data.max_train_per_class",)),
    (["--epochs", "many"], ("--epochs",)),
    (["--from-task", "1"], ("--from-task", "--resume")),
]


def test_every_bad_input_is_one_line_and_changes_nothing(base, tmp_path):
    run = _copy(base[0], tmp_path / "run")
    before = _snapshot(run)
    for extra, needles in _bad_resume_inputs(tmp_path):
        _one_line_error(_cli("train", "--resume", run, *extra), *needles)
        assert _snapshot(run) == before, extra
    for extra, needles in BAD_FRESH:
        out = tmp_path / "fresh"
        _one_line_error(_cli("train", "--out", out, *SETS, *extra), *needles)
        assert not out.exists(), extra
    _one_line_error(_cli("train", "--out", run, *SETS), "already holds a run", "--resume")
    for args, needles in [
        (["ablate", "--seed", "1"], ("--seed",)),
        (["ablate", "--seeds", "1,x"], ("--seeds",)),
        (["ablate", "--seeds", "99999999999999999999", "--methods", "zeroshot", "--out", tmp_path / "a"], ("seed",)),
        (["train", "--resume", tmp_path / "nowhere"], ("no such folder",)),
        (["train", "--resume", tmp_path], ("not a segpcl run directory",)),
    ]:
        _one_line_error(_cli(*args), *needles)
    assert not (tmp_path / "a").exists()
    assert _snapshot(run) == before


def test_damaged_run_files_are_one_line_errors(base, tmp_path):
    cases = {
        "config.yaml": (b"data: [unclosed\n", ("config.yaml is damaged",)),
        "checkpoints/LATEST": (b"\xff\xfe garbage", ("LATEST is damaged",)),
    }
    for name, (data, needles) in cases.items():
        run = _copy(base[0], tmp_path / name.replace("/", "_"))
        (run / name).write_bytes(data)
        before = _snapshot(run)
        _one_line_error(_cli("train", "--resume", run), *needles)
        assert _snapshot(run) == before, name


def test_metrics_json_names_its_units_and_the_plot_renders(base):
    metrics = json.loads((base[0] / "metrics.json").read_text())
    assert "task_accuracy" not in metrics and len(metrics["seen_accuracy"]) == 2
    assert "percent" in metrics["units"]
    svg = (base[0] / "plots" / "accuracy.svg").read_text()
    assert "hsl(" not in svg and "accuracy (%)" in svg and "task 2 classes" in svg and "all seen classes" in svg
    from segpcl.report import accuracy_svg, accuracy_table

    old = {k: v for k, v in metrics.items() if k != "seen_accuracy"} | {"task_accuracy": metrics["seen_accuracy"]}
    assert accuracy_svg(old) == svg and "Last" in accuracy_table(old)  # files of older segpcl still read
    try:
        import cairosvg
    except (ImportError, OSError):
        cairosvg = None
    if cairosvg is not None:
        assert cairosvg.svg2png(bytestring=svg.encode())[:4] == b"\x89PNG"
    converter = shutil.which("rsvg-convert")
    if converter:
        png = subprocess.run([converter, "-f", "png"], input=svg.encode(), capture_output=True)
        assert png.returncode == 0 and png.stdout[:4] == b"\x89PNG", png.stderr


def test_help_shows_every_default_and_every_method():
    from segpcl.method.learner import METHODS

    for command in ("train", "ablate"):
        text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
        options = [line.split()[0] for line in text.splitlines() if line.strip().startswith("--")]
        blocks = text.split("\n  --")[1:]
        for block in blocks:
            name = block.split()[0]
            if name in ("help",):
                continue
            assert "default:" in " ".join(block.split()), (command, name)
        assert ("--seed" in options) == (command == "train") and "--seeds" not in options or command == "ablate"
    train_help = " ".join(CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output.split())
    train_help = re.sub(r"- ", "-", train_help)  # click wraps long method names at their hyphens
    for name in METHODS:
        assert name in train_help
