"""Run folders, data sets and weights files from someone else: nothing in them runs code, their size and
contents are checked when read, and what goes wrong is one `error:` line with exit status 2 (issue 23, part A).

Every hostile file here has a side effect (it creates a marker file) if anything unpickles or runs it."""

import errno
import hashlib
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import segpcl
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.trainer import run_training
from segpcl.errors import ConfigError, DataError, WeightsError

REDUCED = ["--model", "tiny", "--epochs", "1", "--set", "data.max_train_per_class=3", "--set",
           "data.max_test_per_class=2", "--set", "data.task_sizes=[32,32]", "--set", "method.k_seed=1",
           "--set", "method.pgd_steps=2", "--set", "train.batch_size=16"]  # fmt: skip


class _Marker:
    """Unpickling it creates the file `path` (io.open), as a malicious pickle's __reduce__ would."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 32]},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
            "method": {"k_seed": 1, "pgd_steps": 2},
        },
    )
    return run_training(cfg, out_dir=tmp_path_factory.mktemp("untrusted") / "run", progress=False)


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 120, dtype=np.uint8)).save(path)
    return path


def _copy(run, tmp_path, name="copy"):
    return shutil.copytree(run.run_dir, tmp_path / name)


def _evil_cifar(root, marker):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(pickle.dumps({"data": _Marker(marker), "fine_labels": [0]}, protocol=2))
    return root


def _edit(path, change):
    data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    change(data)
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))


def _rerecord_classes(root):
    """What a forger would do: make every checkpoint's record of classes.json match the edited file."""
    data = (root / "classes.json").read_bytes()
    for manifest in (root / "checkpoints").glob("task_*/MANIFEST.json"):
        record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        _edit(manifest, lambda m, r=record: m["run_files"].update({"classes.json": r}))


# ------------------------------------------------------------------- a run folder pointing at hostile data


@pytest.fixture
def hostile(run, tmp_path):
    """The trained run, its config pointing at a CIFAR-100 folder whose pickles create `marker`."""
    marker = tmp_path / "MARKER"
    root = _copy(run, tmp_path, "hostile")
    evil = _evil_cifar(tmp_path / "data", marker)

    def to_cifar(cfg):
        cfg["data"].update(bench="cifar100", data_root=str(evil))

    _edit(root / "config.yaml", to_cifar)
    return root, evil, marker


def test_predict_export_and_load_run_never_read_the_data_set(hostile, image, tmp_path):
    root, _, marker = hostile
    result = CliRunner().invoke(main, ["predict", str(root), str(image), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["image"] == str(image)
    result = CliRunner().invoke(main, ["export", str(root), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    clip = segpcl.load_run(root)
    assert len(clip.class_names) == 64
    assert not marker.exists()


def test_eval_and_data_check_refuse_the_hostile_pickles_unrun(hostile):
    root, evil, marker = hostile
    line = _one_error_line(CliRunner().invoke(main, ["eval", str(root), "--quiet"]))
    assert "io.open" in line and "never holds" in line and "--download" in line
    with pytest.raises(DataError, match="never holds"):
        segpcl.load_run(root).evaluate()
    result = CliRunner().invoke(main, ["data", "check", "--bench", "cifar100", "--data-root", str(evil)])
    assert result.exit_code != 0 and "never holds" in result.output, result.output
    assert not marker.exists()


def test_the_cifar_reader_still_reads_the_format(tmp_path):
    from segpcl.benchmarks.cifar100 import _unpickle

    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({b"data": data, "fine_labels": [1, 2, 3, 4], "batch_label": b"x"}, protocol))
        entry = _unpickle(path)
        assert np.array_equal(entry["data"], data) and entry["fine_labels"] == [1, 2, 3, 4]
    path.write_bytes(pickle.dumps({"data": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(DataError, match="array of Python objects"):
        _unpickle(path)


# ----------------------------------------------------------------------------------- classes.json, manifests


def test_classes_json_is_verified_against_the_checkpoint(run, image, tmp_path):
    root = _copy(run, tmp_path)
    _edit(root / "classes.json", lambda c: c["class_names"].__setitem__(0, "forged"))
    line = _one_error_line(CliRunner().invoke(main, ["predict", str(root), str(image)]))
    assert "does not match the size and sha256 recorded" in line


def test_a_run_without_the_record_opens_with_a_warning(run, image, tmp_path, caplog):
    root = _copy(run, tmp_path)
    for manifest in (root / "checkpoints").glob("task_*/MANIFEST.json"):
        _edit(manifest, lambda m: m.pop("run_files"))
    clip = segpcl.load_run(root)
    assert clip.class_names == run.class_names
    assert "used unverified" in caplog.text


def test_a_run_without_classes_json_needs_an_explicit_data_root(run, tmp_path):
    root = _copy(run, tmp_path)
    (root / "classes.json").unlink()
    with pytest.raises(ConfigError, match="no classes.json.*--data-root"):
        segpcl.load_run(root)


@pytest.mark.parametrize("template", ["a photo of {1}.", "a photo of {x}.", "{}{x}", "no slot"])
def test_templates_are_checked_when_a_run_opens(run, image, tmp_path, template):
    root = _copy(run, tmp_path)
    _edit(root / "classes.json", lambda c: c.update(templates=[template]))
    _rerecord_classes(root)
    line = _one_error_line(CliRunner().invoke(main, ["predict", str(root), str(image)]))
    assert "classes.json, template 1" in line


def test_classes_json_size_and_shape_are_bounded(run, tmp_path, monkeypatch):
    import segpcl.engine.classes as classes

    root = _copy(run, tmp_path)
    monkeypatch.setattr(classes, "MAX_BYTES", 1024)
    with pytest.raises(ConfigError, match="segpcl reads at most 0 MB"):
        segpcl.load_run(root)
    monkeypatch.undo()
    _edit(root / "classes.json", lambda c: c.update(task_sizes=[32, 31]))
    _rerecord_classes(root)
    with pytest.raises(ConfigError, match="adding up to its 64 class names"):
        segpcl.load_run(root)


@pytest.mark.parametrize("name", ["../config.yaml", "/etc/hostname", "adapter/../../../classes.json"])
def test_manifest_paths_stay_in_the_checkpoint_folder(run, image, tmp_path, name):
    root = _copy(run, tmp_path)
    manifest = root / "checkpoints" / "task_01" / "MANIFEST.json"
    _edit(manifest, lambda m: m["files"].update({name: {"size": 1, "sha256": "0" * 64}}))
    line = _one_error_line(CliRunner().invoke(main, ["predict", str(root), str(image)]))
    assert "a path outside the checkpoint folder" in line


# ------------------------------------------------------------------------------------- TorchScript weights


class _Hook(torch.nn.Module):
    """A scripted submodule whose TorchScript __setstate__ creates a file (torch.from_file, shared=True)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.size = 0

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.path = state[0]
        self.training = state[1]
        self.size = torch.from_file(self.path, True, 8, dtype=torch.uint8).numel()


@pytest.fixture
def scripted(tmp_path):
    """An OpenAI-style TorchScript CLIP archive (the tiny CLIP, scripted; its attention mask an attribute, not a
    buffer, as in OpenAI's model) with a side effect on load; (path, the weights it holds, marker)."""
    from segpcl.models.tiny import build_tiny

    torch.manual_seed(3)
    clip, _, _ = build_tiny("tiny")
    weights = {k: v.clone() for k, v in clip.state_dict().items()}
    mask = clip.attn_mask
    del clip._buffers["attn_mask"]
    clip.attn_mask = mask
    marker = tmp_path / "MARKER"
    clip.hook = _Hook(str(marker))
    path = tmp_path / "ViT-tiny.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated; OpenAI's files are TorchScript all the same
        torch.jit.save(torch.jit.script(clip), str(path))
    return path, weights, marker


def test_torchscript_tensors_load_and_its_code_never_runs(scripted, monkeypatch):
    from segpcl.models.loading import load_clip
    from segpcl.models.tiny import TINY_CONFIGS

    path, weights, marker = scripted
    monkeypatch.setitem(TINY_CONFIGS, "tiny-quickgelu", TINY_CONFIGS["tiny"])  # a QuickGELU arch of this size
    model = load_clip("tiny-quickgelu", path)
    got = model.open_clip_state_dict()
    assert got.keys() == weights.keys() and all(torch.equal(got[k], v) for k, v in weights.items())
    assert not marker.exists()
    with pytest.raises(WeightsError, match="QuickGELU") as err:
        load_clip("tiny", path)
    assert "tiny-quickgelu" not in str(err.value) and "ViT-B-16-quickgelu" in str(err.value)
    with pytest.warns(FutureWarning):
        torch.jit.load(str(path))  # the side effect is real: torch.jit.load runs it
    assert marker.exists()


def test_a_torchscript_archive_naming_python_code_is_refused_unrun(tmp_path):
    from segpcl.models.loading import load_clip

    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps(_Marker(marker), protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(WeightsError, match="io.open, which a module's weights never need"):
        load_clip("tiny", path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------- one line, exit 2


def test_malformed_yaml_in_config_and_set(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1e-3,\n")
    line = _one_error_line(CliRunner().invoke(main, ["train", "--config", str(bad), "--out", str(tmp_path / "r")]))
    assert f"config file {bad} is not valid YAML" in line and "line 3" in line
    line = _one_error_line(CliRunner().invoke(main, ["train", "--set", "data.task_sizes=[1,", "--out", str(tmp_path)]))
    assert "--set 'data.task_sizes=[1,': the value is not valid YAML" in line
    assert not (tmp_path / "r").exists()


def _full_disk_at(monkeypatch, task: int, exc: Exception):
    """The checkpoint write of `task` (0-based) writes part of its files, then finds the disk full."""
    import segpcl.engine.run as engine_run

    real = engine_run.write_task_contents

    def write(folder, model, method, state):
        if len(state["metrics"]["acc"]) == task + 1:
            (folder / "partial.bin").write_bytes(b"x" * 1000)
            raise exc
        real(folder, model, method, state)

    monkeypatch.setattr(engine_run, "write_task_contents", write)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resumable(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    out = tmp_path / "run"
    text = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    _full_disk_at(monkeypatch, 1, SafetensorError(text))
    line = _one_error_line(CliRunner().invoke(main, ["train", "--out", str(out), "--quiet", *REDUCED]))
    assert "no space left on the disk" in line and "tasks 1 to 1 are saved" in line
    assert f"segpcl train --resume {out}" in line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["LATEST", "task_00"]  # no half-written task
    monkeypatch.undo()
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["tasks_completed"] == 2


def test_which_failures_are_a_full_disk(tmp_path):
    from segpcl.engine.checkpoint import RunDir

    folder = RunDir(tmp_path)
    error = folder.disk_full_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert "no task was saved yet: free space and run the command again" in str(error)
    assert folder.disk_full_error(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))) is not None
    assert folder.disk_full_error(OSError(errno.EACCES, os.strerror(errno.EACCES))) is None
    assert folder.disk_full_error(ValueError("No space left on device")) is None


def test_from_task_with_a_linked_task_folder_is_refused(run, tmp_path):
    root = _copy(run, tmp_path)
    elsewhere = shutil.move(root / "checkpoints" / "task_01", tmp_path / "elsewhere")
    (root / "checkpoints" / "task_01").symlink_to(elsewhere, target_is_directory=True)
    line = _one_error_line(CliRunner().invoke(main, ["train", "--resume", str(root), "--from-task", "1"]))
    assert "task_01 is a symbolic link" in line
    assert (root / "checkpoints" / "task_01").is_symlink() and (tmp_path / "elsewhere" / "MANIFEST.json").is_file()


def test_predict_on_files_that_are_not_images(run, image, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    line = _one_error_line(CliRunner().invoke(main, ["predict", str(run.run_dir), str(text)]))
    assert f"{text} is not an image segpcl can read" in line
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(image, folder / "good.png")
    (folder / "bad.png").write_bytes(b"\x89PNG not really")
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"{folder / 'good.png'}: ")
    assert len(result.stdout.splitlines()) == 1
    assert f"warning: skipped {folder / 'bad.png'} (UnidentifiedImageError" in result.stderr
    assert "skipped 1 of 2 files" in result.stderr
    (folder / "good.png").unlink()
    line = _one_error_line(CliRunner().invoke(main, ["predict", str(run.run_dir), str(folder)]))
    assert "no readable image" in line
