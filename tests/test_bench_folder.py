"""`--bench folder`: any ImageFolder as a stream. Both layouts train end to end through the CLI (tiny model); the
split, the names, the default tasks and every refusal are checked on folders built here."""

from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner
from fakedata import corrupt, make_split_imagefolder, write_image

from segpcl.benchmarks._files import DataWarning, UnreadableImageWarning
from segpcl.benchmarks.base import DataConfig, get_benchmark_info, stream_task_sizes
from segpcl.benchmarks.check import check_benchmark
from segpcl.benchmarks.folder import build_folder, folder_class_name, is_image_folder
from segpcl.cli import main
from segpcl.errors import DataError

CLASSES = ["001.red_fox", "002.sea-anemone", "aquarium_fish", "Cat"]
NAMES = ["red fox", "sea anemone", "aquarium fish", "Cat"]
TINY = {
    "model.arch": "tiny",
    "model.pretrained": "null",
    "model.precision": "fp32",
    "train.device": "cpu",
    "train.epochs": 1,
    "data.num_workers": 0,
    "method.k_seed": 2,
    "method.seed_mode": "global",
    "method.pgd_steps": 1,
    "train.batch_size": 8,
}


def _unsplit(root, classes=CLASSES, per_class=5):
    for c in classes:
        for k in range(per_class):
            write_image(root / c / f"img_{k}.jpg")
    return root


def _train(root, out, *extra):
    args = ["train", "--bench", "folder", "--data-root", str(root), "--out", str(out), "--quiet", *extra]
    args += [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    return CliRunner().invoke(main, args)


def test_train_on_a_folder_of_class_folders(tmp_path):
    root = _unsplit(tmp_path / "pets")
    bad = corrupt(root / "Cat" / "img_0.jpg")
    with pytest.warns(UnreadableImageWarning, match=str(bad)):
        result = _train(root, tmp_path / "run", "--initial", "2", "--increment", "2")
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["bench"] == "folder" and metrics["task_sizes"] == [2, 2] and metrics["tasks_completed"] == 2
    assert sum(metrics["skipped_images"].values()) == 1  # skipped and counted, wherever the split put it


def test_train_on_a_pre_split_folder_with_the_default_tasks(tmp_path):
    root = make_split_imagefolder(tmp_path / "birds", ["001.Black_footed_Albatross", "002.Laysan_Albatross"], (3, 1))
    corrupt(root / "train" / "002.Laysan_Albatross" / "train_1.jpg")
    with pytest.warns(UnreadableImageWarning):
        result = _train(root, tmp_path / "run")
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task_sizes"] == [1, 1] and metrics["tasks_completed"] == 2  # two classes: two tasks of one
    assert metrics["skipped_images"] == {"train": 1, "test": 0}


def test_unsplit_folder_names_split_and_seed(tmp_path):
    root = _unsplit(tmp_path / "d", per_class=10)
    (root / "no_images").mkdir()
    (root / "no_images" / "notes.txt").write_text("not an image")
    with pytest.warns(DataWarning, match="no_images"):
        b = build_folder(DataConfig(data_root=root, image_size=8))
    assert sorted(b.class_names) == sorted(NAMES) and b.n_classes == 4
    assert b.notes["layout"].startswith("class folders, 80/20")
    assert len(b.train_targets) == 32 and len(b.test_targets) == 8
    assert sorted(b.test_targets.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        again = build_folder(DataConfig(data_root=root, image_size=8))
        other_seed = build_folder(DataConfig(data_root=root, image_size=8, seed=1))
        wider = build_folder(DataConfig(data_root=root, image_size=8, test_fraction=0.5))
    assert again.test.all_paths() == b.test.all_paths()  # the split is a function of the files and the split seed
    assert other_seed.test.all_paths() != b.test.all_paths()
    assert len(wider.test_targets) == 20
    assert not set(b.test.all_paths()) & set(b.train.all_paths())


def test_class_name_cleaning():
    assert [folder_class_name(c) for c in CLASSES] == NAMES
    assert folder_class_name("n01440764") == "n01440764" and folder_class_name("3d-printer") == "3d printer"


def test_default_tasks_of_a_folder():
    info = get_benchmark_info("folder")
    assert stream_task_sizes(info, 23, None, None) == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert stream_task_sizes(info, 4, None, None) == [1, 1, 1, 1]
    assert stream_task_sizes(info, 23, 5, None) == [5, 5, 5, 5, 3]
    assert stream_task_sizes(info, 23, None, 4) == [4, 4, 4, 4, 4, 3]
    assert stream_task_sizes(get_benchmark_info("cub200"), 200, None, None) == [20] * 10


def test_refusals(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        build_folder(DataConfig(data_root=None))
    with pytest.raises(DataError, match="does not exist"):
        build_folder(DataConfig(data_root=tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class folders.*it is empty"):
        build_folder(DataConfig(data_root=tmp_path / "empty"))
    one = _unsplit(tmp_path / "one" / "inner", classes=["cat", "dog"]).parent
    with pytest.raises(DataError, match="holds one class .*pass it as --data-root"):
        build_folder(DataConfig(data_root=one))
    only_text = tmp_path / "text"
    (only_text / "a").mkdir(parents=True)
    (only_text / "a" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="none of the class folders"), pytest.warns(DataWarning):
        build_folder(DataConfig(data_root=only_text))


def test_bare_id_folders_need_class_names(tmp_path):
    root = _unsplit(tmp_path / "ids", classes=["0", "1", "10"], per_class=2)
    with pytest.raises(DataError, match="bare ids.*--class-names"):
        build_folder(DataConfig(data_root=root))
    names = tmp_path / "names.txt"
    names.write_text("0 zebra\n1 yak\n10 xerus\n")  # keyed by folder name, not by sorted position
    b = build_folder(DataConfig(data_root=root, class_names_file=names))
    assert b.class_names == ["zebra", "yak", "xerus"]


def test_data_check_and_benches_describe_a_folder(tmp_path):
    root = _unsplit(tmp_path / "d", per_class=3)
    bad = corrupt(root / "aquarium_fish" / "img_2.jpg")
    rep = check_benchmark("folder", DataConfig(data_root=root, image_size=8), progress=False)
    assert rep.n_classes == rep.expected_classes == 4 and [p for p, _ in rep.unreadable] == [str(bad)]
    out = CliRunner().invoke(main, ["data", "check", "--bench", "folder", "--data-root", str(root)])
    assert out.exit_code == 1 and "class folders, 80/20" in out.output and "red fox" in out.output
    listing = CliRunner().invoke(main, ["benches", "--data-root", str(root)])
    row = next(line.split() for line in listing.output.splitlines() if line.startswith("folder "))
    assert row[1:4] == ["any", "10", "ready"]
    assert is_image_folder(root) and not is_image_folder(tmp_path) and not is_image_folder(None)
    empty = CliRunner().invoke(main, ["data", "check", "--bench", "folder", "--data-root", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "error:" in empty.output and "Traceback" not in empty.output
