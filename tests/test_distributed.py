"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process: the same anchors, the same
prototypes, the same accuracies; a killed rank ends the run; resume under torchrun; the pieces alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import segpcl
from segpcl._core import PrototypeBank
from segpcl.cli import _without_nproc
from segpcl.engine import distributed
from segpcl.errors import ConfigError

ARGS = [
    "train",
    "--model",
    "tiny",
    "--epochs",
    "1",
    "--max-tasks",
    "2",
    "--quiet",
    "--set",
    "data.max_train_per_class=2",
    "--set",
    "train.batch_size=8",
]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(segpcl.__file__).parents[1]), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_INTERPRET", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "segpcl"]


def _run(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and torchrun with 2 processes on the same run (global batch 8), anchors dumped."""
    root = tmp_path_factory.mktemp("ddp")
    single = _run(
        [sys.executable, "-m", "segpcl", *ARGS, "--out", str(root / "one")],
        _env(SEGPCL_DEBUG_ANCHORS=str(root / "anchors_one")),
    )
    assert single.returncode == 0, single.stderr[-3000:]
    t0 = time.monotonic()
    two = _run([*_torchrun(), *ARGS, "--out", str(root / "two")], _env(SEGPCL_DEBUG_ANCHORS=str(root / "anchors_two")))
    assert two.returncode == 0, two.stderr[-3000:]
    return root, two.stdout, time.monotonic() - t0


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_two_processes_match_one(runs):
    root, stdout, _ = runs
    assert stdout.count("run directory:") == 1  # only rank 0 prints
    one, two = _metrics(root / "one"), _metrics(root / "two")
    assert one["tasks_completed"] == two["tasks_completed"] == 2
    for row1, row2 in zip(one["accuracy_matrix"], two["accuracy_matrix"], strict=True):
        assert np.allclose(row1, row2, atol=0.5)
    # the anchors of task 2: the same seeds and targets; the teacher (the model after task 1) differs only by the
    # float rounding of the averaged gradient, which may flip the sign of a PGD step in a few pixels
    # (test_split_dpgd_is_exact: with the same teacher the anchors are bit for bit those of one process)
    a = torch.load(root / "anchors_one" / "anchors_01.pt")
    b = torch.load(root / "anchors_two" / "anchors_01.pt")
    assert len(a["targets"]) > 0
    for key in ("targets", "seed_indices"):
        assert torch.equal(a[key], b[key]), key
    moved = (a["images"] - b["images"]).abs()
    assert float((moved > 0).float().mean()) < 1e-3 and float(moved.max()) <= 0.0031
    for key in ("teacher_logits", "teacher_features"):
        assert torch.allclose(a[key], b[key], atol=1e-3), key
    assert one["task_info"][1]["anchor_stats"]["anchors"] == two["task_info"][1]["anchor_stats"]["anchors"]
    # the logged losses are over the whole global batch (the ranks' means averaged): task 1 starts from the same
    # weights on the same batches
    assert one["task_info"][0]["steps"] == two["task_info"][0]["steps"] >= 2
    assert abs(one["task_info"][0]["mean_ce"] - two["task_info"][0]["mean_ce"]) < 1e-4
    # the pre-clip norm is that of the averaged (global batch) gradient: the same as one process's
    assert abs(one["task_info"][0]["mean_grad_norm"] - two["task_info"][0]["mean_grad_norm"]) < 1e-3
    assert one["task_info"][0]["clipped_share"] == two["task_info"][0]["clipped_share"]
    assert one["skipped_images"] == two["skipped_images"]
    for t in range(2):
        p = np.load(root / "one" / "checkpoints" / f"task_{t:02d}" / "prototypes.npz")
        q = np.load(root / "two" / "checkpoints" / f"task_{t:02d}" / "prototypes.npz")
        assert np.array_equal(p["class_ids"], q["class_ids"]) and np.array_equal(p["counts"], q["counts"])
        assert np.allclose(p["sums"] / p["counts"][:, None], q["sums"] / q["counts"][:, None], atol=1e-5)
    # rank 0 alone wrote the run directory
    assert sorted(p.name for p in (root / "two" / "checkpoints").iterdir()) == ["LATEST", "task_00", "task_01"]


def test_diagnose_under_two_processes(tmp_path):
    """--diagnose on lora under torchrun: the probe anchors go through the same sharded DPGD, every rank measures
    the same images, and rank 0 writes the same diagnostic as one process."""
    args = [*ARGS, "--method", "lora", "--diagnose"]
    one = _run([sys.executable, "-m", "segpcl", *args, "--out", str(tmp_path / "one")], _env())
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*_torchrun(), *args, "--out", str(tmp_path / "two")], _env())
    assert two.returncode == 0, two.stderr[-3000:]
    (a,), (b,) = _metrics(tmp_path / "one")["drift"], _metrics(tmp_path / "two")["drift"]
    assert a["anchors_source"] == b["anchors_source"] == "probe"
    assert {k: g["n"] for k, g in a["groups"].items()} == {k: g["n"] for k, g in b["groups"].items()}
    assert a["groups"]["anchors"]["n"] > 0
    # the teachers differ by float rounding only; the tiny model's visual drift (~1e-6) is at that level itself
    for key in ("ratio", "anchors_vs_new"):
        assert b[key]["value"] == pytest.approx(a[key]["value"], rel=1e-2), key
    for name, g in a["groups"].items():
        assert b["groups"][name]["visual"] == pytest.approx(g["visual"], abs=1e-6), name


def test_mgclip_under_two_processes(tmp_path):
    """MG-CLIP under torchrun: the drift rule, measured on the ranks' shards and gathered, stops the first task at
    the epoch one process stops it (and goes back one epoch alike); the visual agent, trained on every rank's
    features, is one process's."""
    args = [*ARGS[:4], "3", *ARGS[5:], "--method", "mgclip", "--set", "method.mgclip_drift=0.006"]
    one = _run([sys.executable, "-m", "segpcl", *args, "--out", str(tmp_path / "one")], _env())
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*_torchrun(), *args, "--out", str(tmp_path / "two")], _env())
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert a["task_info"][0]["first_task_epochs"] == b["task_info"][0]["first_task_epochs"] == 1
    assert len(a["task_info"][0]["nontarget_logit_drift"]) == 2  # it fired after the second epoch
    assert b["task_info"][0]["nontarget_logit_drift"] == pytest.approx(
        a["task_info"][0]["nontarget_logit_drift"], rel=1e-4
    )
    assert [i["steps"] for i in a["task_info"]] == [i["steps"] for i in b["task_info"]]
    for row1, row2 in zip(a["accuracy_matrix"], b["accuracy_matrix"], strict=True):
        assert np.allclose(row1, row2, atol=0.5)
    from safetensors.torch import load_file

    for t in range(2):
        x, y = (
            load_file(tmp_path / r / "checkpoints" / f"task_{t:02d}" / "method.safetensors") for r in ("one", "two")
        )
        assert torch.allclose(x["visual_agent"], y["visual_agent"], atol=1e-5)


def test_split_dpgd_is_exact(tmp_path):
    """Seed scan and PGD split across 2 ranks, with the same teacher: the anchor set of one process, exactly."""
    out = tmp_path / "anchors.json"
    worker = Path(__file__).with_name("ddp_anchors_worker.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        str(worker),
        str(out),
    ]
    result = _run(cmd, _env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["chunks"] >= 2 and all(report["equal"].values()), report


def test_resume_under_torchrun(runs, tmp_path):
    root, _, _ = runs
    out = tmp_path / "resumed"
    first = _run([*_torchrun(), *ARGS[:6], "1", *ARGS[7:], "--out", str(out)], _env())
    assert first.returncode == 0, first.stderr[-3000:]
    assert _metrics(out)["tasks_completed"] == 1
    # segpcl train --nproc 2: torchrun's launcher from the CLI
    again = _run(
        [sys.executable, "-m", "segpcl", "train", "--nproc", "2", "--resume", str(out), "--max-tasks", "2", "--quiet"],
        _env(),
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert _metrics(out)["accuracy_matrix"] == _metrics(root / "two")["accuracy_matrix"]


def test_rapf_two_processes_match_one(tmp_path):
    """RAPF under torchrun: each rank's class statistics merged (ClassScatter) are one process's, and every rank
    keeps its share of the same pseudo-features, so the run matches one process up to float rounding."""
    from safetensors.torch import load_file

    args = [*ARGS, "--method", "rapf", "--set", "method.rapf_threshold=1.3", "--set", "data.templates=null"]
    one = _run([sys.executable, "-m", "segpcl", *args, "--out", str(tmp_path / "one")], _env())
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*_torchrun(), *args, "--out", str(tmp_path / "two")], _env())
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert abs(a["task_info"][0]["mean_ce"] - b["task_info"][0]["mean_ce"]) < 1e-4
    assert a["task_info"][1]["hard_pairs"] == b["task_info"][1]["hard_pairs"] > 0
    assert b["task_info"][1]["fusion_kept_new"] == pytest.approx(a["task_info"][1]["fusion_kept_new"], abs=1e-3)
    for row1, row2 in zip(a["accuracy_matrix"], b["accuracy_matrix"], strict=True):
        assert np.allclose(row1, row2, atol=0.5)
    p = load_file(tmp_path / "one" / "checkpoints" / "task_01" / "method.safetensors")
    q = load_file(tmp_path / "two" / "checkpoints" / "task_01" / "method.safetensors")
    assert torch.equal(p["class_counts"], q["class_counts"]) and int(p["class_counts"].sum()) > 0
    for key in ("class_means", "class_covs", "adapter"):
        assert torch.allclose(p[key], q[key], atol=1e-4), key


def test_moe_adapters_two_processes_match_one(tmp_path):
    """MoE-Adapters under torchrun: the experts' gradients averaged over the ranks are one process's, so without
    the per-sample random draws (router noise, dropout: each rank draws its own) the experts match."""
    from safetensors.torch import load_file

    args = [*ARGS, "--method", "moe-adapters", "--set", "method.moe_noisy_gating=false"]
    args += ["--set", "method.moe_dropout=0", "--set", "train.warmup_steps=1", "--set", "data.templates=null"]
    one = _run([sys.executable, "-m", "segpcl", *args, "--out", str(tmp_path / "one")], _env())
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*_torchrun(), *args, "--out", str(tmp_path / "two")], _env())
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [i["steps"] for i in a["task_info"]] == [i["steps"] for i in b["task_info"]]
    assert abs(a["task_info"][0]["mean_ce"] - b["task_info"][0]["mean_ce"]) < 1e-4
    for row1, row2 in zip(a["accuracy_matrix"], b["accuracy_matrix"], strict=True):
        assert np.allclose(row1, row2, atol=0.5)
    p = load_file(tmp_path / "one" / "checkpoints" / "task_01" / "method.safetensors")
    q = load_file(tmp_path / "two" / "checkpoints" / "task_01" / "method.safetensors")
    assert float(p["visual.0.up_weight"].abs().sum()) > 0
    for key in p:
        assert torch.allclose(p[key], q[key], atol=1e-5), key


def test_zscl_under_two_processes(tmp_path):
    """ZSCL under torchrun: the ranks share one global reference batch, so the CE and the image->text term are one
    process's (the text->image term runs over each rank's share of the images: method/peers/zscl.py), and every
    rank averages the weights at the same steps."""
    args = [*ARGS, "--method", "zscl", "--set", "train.lr=1e-3"]
    one = _run([sys.executable, "-m", "segpcl", *args, "--out", str(tmp_path / "one")], _env())
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*_torchrun(), *args, "--out", str(tmp_path / "two")], _env())
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert a["tasks_completed"] == b["tasks_completed"] == 2
    for x, y in zip(a["task_info"], b["task_info"], strict=True):
        assert x["steps"] == y["steps"] >= 2 and x["averaged_models"] == y["averaged_models"] == 2
        assert y["mean_zscl_text"] > 0 and np.isfinite(y["mean_zscl_text"])
    for key in ("mean_ce", "mean_zscl_image"):  # the first step exactly; the second after slightly other weights
        assert b["task_info"][0][key] == pytest.approx(a["task_info"][0][key], rel=1e-3), key


def test_killed_rank_stops_the_run(tmp_path):
    out = tmp_path / "killed"
    args = [a if a != "data.max_train_per_class=2" else "data.max_train_per_class=8" for a in ARGS]
    proc = subprocess.Popen(
        [*_torchrun(), *args, "--epochs", "3", "--out", str(out)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "log.txt").exists():  # rank 0 claimed the run: both ranks are in it
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        victim = None
        while victim is None and time.monotonic() < deadline:
            for pid in _descendants(proc.pid):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"RANK=1" in environ and b"segpcl" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    victim = pid
            time.sleep(0.1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=90)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert elapsed < 60
    assert "rank      : 1" in stderr and "Signal 9" in stderr, stderr[-3000:]
    assert not (out / "checkpoints" / "task_01").exists()


def test_dead_peer_without_torchrun_is_one_clear_error(tmp_path):
    """Two processes started by hand (no torchrun agent to stop the group): the survivor's collective fails, and
    it exits with one `error:` line instead of gloo's traceback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "manual"
    args = [a if a != "data.max_train_per_class=2" else "data.max_train_per_class=8" for a in ARGS]
    cmd = [sys.executable, "-m", "segpcl", *args, "--epochs", "3", "--out", str(out)]
    common = dict(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), SEGPCL_DIST_TIMEOUT="30")
    procs = [
        subprocess.Popen(
            cmd,
            env=_env(RANK=str(r), LOCAL_RANK=str(r), **common),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while not (out / "log.txt").exists():
            assert procs[0].poll() is None and time.monotonic() < deadline, procs[0].communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        procs[1].kill()
        t0 = time.monotonic()
        _, stderr = procs[0].communicate(timeout=90)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert procs[0].returncode == 2, stderr[-3000:]
    assert elapsed < 60
    assert "error: rank 0 lost contact with another training process" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def test_rank0_failure_before_training_stops_every_rank(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("not a run")
    result = _run([*_torchrun(), *ARGS, "--out", str(tmp_path / "busy")], _env(), timeout=120)
    assert result.returncode != 0
    assert "is a folder that is not empty" in result.stderr
    assert "rank 0 stopped before training" in result.stderr  # rank 1's own message
    assert (tmp_path / "busy" / "mine.txt").read_text() == "not a run"


# -- the pieces, in one process -------------------------------------------------------------------------------


def test_add_sums_matches_numpy():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(50, 6)).astype(np.float32)
    labels = rng.integers(0, 5, size=50).astype(np.int64)
    whole = PrototypeBank(6)
    whole.update(feats, labels)
    merged = PrototypeBank(6)
    for part in (slice(0, 20), slice(20, 50)):  # two "ranks'" shards, summed then added
        shard = PrototypeBank(6)
        shard.update(feats[part], labels[part])
        state = shard.state_dict()
        merged.add_sums(state["class_ids"], state["sums"], state["counts"])
    ids, means = merged.means()
    ref = np.stack([feats[labels == c].astype(np.float64).mean(0) for c in ids])
    assert np.allclose(means, ref, atol=1e-6)
    assert np.array_equal(merged.counts()[1], whole.counts()[1])
    assert np.allclose(merged.means()[1], whole.means()[1], atol=1e-6)
    merged.add_sums(np.array([9]), np.zeros((1, 6)), np.array([0]))  # a count of 0 adds nothing
    assert 9 not in merged
    with pytest.raises(ValueError, match="counts must all be >= 0"):
        merged.add_sums(np.array([1]), np.zeros((1, 6)), np.array([-1]))
    with pytest.raises(ValueError):
        merged.add_sums(np.array([1]), np.zeros((1, 5)), np.array([1]))


def test_sharded_batches_are_the_single_process_batches(monkeypatch):
    """Rank r's batch j of B/N images, over the ranks, holds exactly the images of batch j of one process."""
    n, batch, world = 22, 8, 2
    ds = list(range(n))
    one = DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(5))
    per_rank = []
    for r in range(world):
        monkeypatch.setattr(distributed, "world", lambda: world)
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        sampler = distributed.ShardedShuffleSampler(ds)
        loader = DataLoader(ds, batch_size=batch // world, sampler=sampler, generator=torch.Generator().manual_seed(5))
        sampler.generator = loader.generator
        per_rank.append([[b.tolist() for b in loader] for _ in range(2)])  # two epochs
    for epoch in range(2):
        expected = [sorted(b.tolist()) for b in one]  # a fresh epoch of the single-process loader
        got = [sorted(x + y) for x, y in zip(per_rank[0][epoch], per_rank[1][epoch], strict=True)]
        assert got == expected


def test_strided_shards_cover_the_set_once(monkeypatch):
    seen = []
    for r in range(3):
        monkeypatch.setattr(distributed, "world", lambda: 3)
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        seen += list(distributed.StridedSampler(10))
    assert sorted(seen) == list(range(10))


def test_without_nproc_and_batch_split(monkeypatch):
    assert _without_nproc(["train", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == ["train", "--epochs", "1"]
    monkeypatch.setattr(distributed, "world", lambda: 3)
    assert distributed.per_rank_batch(12) == 4
    with pytest.raises(ConfigError, match="divisible by the 3 processes"):
        distributed.per_rank_batch(8)
    assert not distributed.active()
