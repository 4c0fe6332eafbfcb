"""Files and folders as a careless or hostile user leaves them (issue 23, part B): links planted where segpcl
writes (the run lock, log.txt, metrics.json, a checkpoint folder) are refused with one line and their targets are
left alone; a folder link loop is walked once and reported; 16-bit and float images are scaled, not clipped; an
image above the pixel cap is a counted skip; and a start that fails before its first checkpoint (a bad image with
--strict, --nproc against the batch, a NaN loss in task 1) leaves nothing, so the same command runs again.

Tiny model, reduced toy stream or a few 8x8 images made on the fly, CPU."""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from fakedata import corrupt, make_split_imagefolder, write_image
from PIL import Image
from torch.utils.data import DataLoader

from segpcl.benchmarks._files import BAD_LABEL, ImageFileDataset, ImageTooLarge, UnreadableImageWarning, load_rgb
from segpcl.benchmarks.check import check_folder, find_unreadable
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine import nofollow
from segpcl.engine.checkpoint import RunDir, write_json
from segpcl.engine.claim import run_log
from segpcl.engine.trainer import run_training
from segpcl.errors import ConfigError, DataError

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
TINY_FILES = [
    "--model", "tiny", "--epochs", "1", "--device", "cpu", "--workers", "0", "--quiet",
    "--set", "model.pretrained=null", "--set", "data.task_sizes=[2,2]",
    "--set", "method.k_seed=1", "--set", "method.pgd_steps=1", "--set", "train.batch_size=4",
]  # fmt: skip
"""A run of two tasks on four classes of a pre-split ImageFolder (`--bench omnibenchmark`)."""


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One finished two-task run the tests copy (zero-shot: every file of a run, nothing trained)."""
    root = tmp_path_factory.mktemp("base")
    overrides = copy.deepcopy(OVERRIDES)
    overrides["method"]["name"] = "zeroshot"
    run_training(resolve_config("toy", overrides=overrides), out_dir=root / "run", progress=False)
    return root / "run"


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


# ------------------------------------------------------------------------------------------ links where we write


@pytest.mark.parametrize("name", [".lock", "log.txt", "metrics.json", "checkpoints/task_01", "checkpoints/LATEST"])
def test_resume_refuses_a_planted_link_and_leaves_its_target_alone(base, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(base, run)
    victim = _victim(tmp_path)
    target = victim
    if name == "checkpoints/task_01":  # a checkpoint folder linked elsewhere (a copy of the real one)
        target = tmp_path / "elsewhere"
        shutil.move(run / name, target)
    else:
        (run / name).unlink(missing_ok=True)
    os.symlink(target, run / name)
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else None
    line = _one_line_error(_cli("train", "--resume", run, "--set", "data.max_tasks=2"), name, "symbolic link")
    assert "rm " in line  # says what to do
    assert victim.read_text() == "precious\n"
    if before is not None:
        assert sorted(p.name for p in target.iterdir()) == before
    assert (run / name).is_symlink()


def test_lock_and_log_are_never_opened_through_a_link(tmp_path):
    """Below the resume check: the lock and the log themselves refuse a link (and a hard link)."""
    victim = _victim(tmp_path)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    os.symlink(victim, run.lock_path)
    with pytest.raises(ConfigError, match="symbolic link"):
        run.acquire()
    os.symlink(victim, run.log_path)
    with pytest.raises(ConfigError, match="symbolic link"), run_log(run):
        pass
    run.lock_path.unlink()
    os.link(victim, run.lock_path)  # a hard link: truncating it would truncate the victim
    with pytest.raises(ConfigError, match="hard link"):
        run.acquire()
    assert victim.read_text() == "precious\n"


def test_whole_file_writes_never_follow_a_link(tmp_path, monkeypatch):
    victim = _victim(tmp_path)
    os.symlink(victim, tmp_path / "metrics.json")
    with pytest.raises(ConfigError, match="metrics.json is a symbolic link"):
        write_json(tmp_path / "metrics.json", {"a": 1})
    # the temporary file is created with O_EXCL | O_NOFOLLOW: a link planted at its name is not written through
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(nofollow.secrets, "token_hex", lambda n: next(names))
    os.symlink(victim, tmp_path / f".out.json.tmp{os.getpid()}.planted")
    write_json(tmp_path / "out.json", {"a": 1})
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert victim.read_text() == "precious\n"
    run = RunDir(tmp_path / "run").create()
    os.symlink(tmp_path, run.task_dir(0))
    with pytest.raises(ConfigError, match="task_00 is a symbolic link"):
        run.save_task(0, lambda folder: None)
    os.symlink(tmp_path, run.root / "plots")
    with pytest.raises(ConfigError, match="plots is a symbolic link"):
        run.write_plot("<svg/>")


# --------------------------------------------------------------------------------------- folders walked once


def _image_folder(root, classes=("apple", "pear"), per_class=20):
    for c in classes:
        for j in range(per_class):
            write_image(root / c / f"{j}.png", "PNG")
    return root


def test_a_folder_link_loop_is_walked_once_and_reported(tmp_path):
    root = _image_folder(tmp_path / "zs")
    os.symlink("..", root / "apple" / "up")  # -> zs/: every class again, then apple/ again, without end
    os.symlink(".", root / "pear" / "self")
    result = _cli("data", "check", "--folder", root)
    assert result.exit_code == 0, result.output
    rows = {line.split("  ")[0]: line.split("  ", 1)[1].strip() for line in result.output.splitlines() if "  " in line}
    assert rows["test images"] == "40", result.output  # not 40 + 40 + 20 + ... until the path limit
    links = rows["links"]
    assert "2 folder link loops not followed" in links
    assert "loop back to a folder above them" in result.output  # the walk's warning, with an example
    report = check_folder(root, progress=False)
    assert report.test_images == 40 and report.link_loops == 2 and report.ok


def test_data_check_reports_the_same_file_reached_through_links(tmp_path):
    root = _image_folder(tmp_path / "zs", per_class=3)
    os.symlink(root / "apple" / "0.png", root / "pear" / "borrowed.png")  # one file in two classes
    os.symlink(root / "apple" / "1.png", root / "apple" / "again.png")  # twice in one class: read once
    report = check_folder(root, progress=False)
    assert report.test_images == 7  # 3 + 4: apple's repeat left out, pear's link kept (another class)
    assert report.link_repeats == 1
    assert [(os.path.basename(a), os.path.basename(b)) for a, b in report.same_files] == [("borrowed.png", "0.png")]
    assert not report.ok
    result = _cli("data", "check", "--folder", root)
    assert result.exit_code == 1 and "borrowed.png" in result.output and "PROBLEMS" in result.output


# ------------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "values, suffix, want",
    [
        (np.array([[0, 257, 32896, 65535]], dtype=np.uint16), "png", [0, 1, 128, 255]),  # I;16
        (np.array([[0, 257, 32896, 65535]], dtype=np.uint16), "tif", [0, 1, 128, 255]),
        (np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32), "tif", [0, 64, 128, 255]),  # F in [0, 1]
        (np.array([[-10, 0, 10, 30]], dtype=np.int32), "tif", [0, 64, 128, 255]),  # I, not 16-bit: stretched
    ],
)
def test_high_depth_images_are_scaled_to_8_bits(tmp_path, values, suffix, want):
    path = tmp_path / f"deep.{suffix}"
    Image.fromarray(np.repeat(values, 3, axis=0)).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I", "F"), im.mode
    rgb = np.asarray(load_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3)
    assert rgb[0, :, 0].tolist() == want and (rgb[..., 0] == rgb[..., 2]).all()


def test_an_image_above_the_pixel_cap_is_a_counted_skip(tmp_path):
    small, big = write_image(tmp_path / "small.png", "PNG"), tmp_path / "big.png"
    Image.new("L", (60, 50)).save(big)
    with pytest.raises(ImageTooLarge, match="60x50 .* above the cap"):
        load_rgb(big, max_pixels=2000)
    ds = ImageFileDataset([small, big], [0, 1], 8, max_pixels=2000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ds[0][1] == 0 and ds[1][1] == BAD_LABEL
    lines = [str(w.message) for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert len(lines) == 1 and "big.png" in lines[0] and "data.max_pixels" in lines[0] and "\n" not in lines[0]
    with pytest.raises(DataError, match="too large"):
        ImageFileDataset([big], [1], 8, strict=True, max_pixels=2000)[0]
    assert "ImageTooLarge: 60x50" in find_unreadable([str(small), str(big)], progress=False, max_pixels=2000)[0][1]
    # the run's setting reaches the data sets, and is checked
    cfg = resolve_config("omnibenchmark", overrides={"data": {"max_pixels": 2000}})
    from segpcl.engine.build import build_stream

    make_split_imagefolder(tmp_path / "omni", ["a", "b"])
    cfg.data.data_root, cfg.data.task_sizes = str(tmp_path / "omni"), [1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = build_stream(cfg, 8, None)
    assert stream.bench.train.max_pixels == 2000 and stream.bench.test.max_pixels == 2000
    _one_line_error(_cli("train", "--out", tmp_path / "r", *SETS, "--set", "data.max_pixels=0"), "data.max_pixels")


# ------------------------------------------------------------------------------------------- failed starts


def _four_classes(tmp_path):
    return make_split_imagefolder(tmp_path / "data" / "omnibenchmark", ["a", "b", "c", "d"], (2, 1))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_strict_run_stopped_by_a_bad_image_leaves_nothing(tmp_path):
    data = _four_classes(tmp_path)
    bad = corrupt(data / "train" / "a" / "train_0.jpg")
    out = tmp_path / "run"
    args = ["train", "--bench", "omnibenchmark", "--data-root", tmp_path / "data", "--out", out, *TINY_FILES]
    _one_line_error(_cli(*args, "--strict"), "cannot read image file", "train_0.jpg")
    assert not out.exists()
    _one_line_error(_cli(*args, "--strict"), "cannot read image file")  # the same error, not "already holds a run"
    # read by a DataLoader worker, the error reaches the main process as the same one line (torch wraps it)
    loader = DataLoader(ImageFileDataset([bad], [0], 8, strict=True), num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert str(caught.value).startswith("cannot read image file") and "Traceback" not in str(caught.value)
    write_image(bad)
    result = _cli(*args, "--strict")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["tasks_completed"] == 2


def test_nproc_against_the_batch_is_checked_before_anything_starts(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _one_line_error(
        _cli("train", "--out", out, "--nproc", "3", *SETS, "--set", "train.batch_size=32"),
        "train.batch_size=32",
        "3 processes",
    )
    assert not out.exists()
    # under torchrun (3 ranks), the engine checks it before claiming the folder or loading the model
    from segpcl.engine import distributed

    monkeypatch.setattr(distributed, "world", lambda: 3)
    cfg = resolve_config("toy", overrides=copy.deepcopy(OVERRIDES))
    cfg.train.batch_size = 32
    with pytest.raises(ConfigError, match="divisible by the 3 processes"):
        run_training(cfg, out_dir=out, progress=False)
    assert not out.exists()


def _nan_in_task(monkeypatch, task: int) -> None:
    from segpcl.method.registry import method_class

    cls = method_class("lora")
    original = cls.training_loss

    def training_loss(self, images, labels):
        loss, parts = original(self, images, labels)
        return (loss * float("nan"), parts) if self.task == task else (loss, parts)

    monkeypatch.setattr(cls, "training_loss", training_loss)


def test_a_nan_in_task_1_leaves_nothing_and_after_task_1_keeps_everything(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_in_task(monkeypatch, 0)
    line = _one_line_error(_cli("train", "--out", out, "--method", "lora", *SETS), "training loss became nan at task 1")
    assert "run the command again" in line and "--resume" not in line
    assert not out.exists()
    monkeypatch.undo()
    _nan_in_task(monkeypatch, 1)  # the same command again: now task 2 fails, after task 1's checkpoint
    line = _one_line_error(_cli("train", "--out", out, "--method", "lora", *SETS), "at task 2", "--resume")
    assert (out / "checkpoints" / "task_00" / "MANIFEST.json").is_file() and (out / "config.yaml").is_file()
    monkeypatch.undo()
    result = _cli("train", "--resume", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["tasks_completed"] == 2


def test_report_never_writes_through_a_link(tmp_path):
    """Outputs outside a run folder (report, ablate, tune, export, --json) are written like the run's own files."""
    import json

    from segpcl.cli import main

    run = tmp_path / "r1"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"accuracy_matrix": [[0.0]], "seen_accuracy": [50.0], "last": 50.0}))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "rep"
    out.mkdir()
    (out / "summary.csv").symlink_to(victim)
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 2 and "summary.csv" in result.output and "Traceback" not in result.output
    assert victim.read_text() == "keep me"
