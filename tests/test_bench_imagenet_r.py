"""imagenet_r: the release folder (README names, seeded 80/20 split written to the run dir), pre-split
folders, and explicit split lists (RAPF's sections, train/ test/ prefixes, train.txt + test.txt)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from fakedata import (
    IMR_NAMES,
    IMR_WNIDS,
    corrupt,
    imr_readme,
    make_imagenet_r_release,
    make_split_imagefolder,
)

from segpcl.benchmarks import imagenet_r
from segpcl.benchmarks._files import DataWarning, UnreadableImageWarning
from segpcl.benchmarks.base import BAD_LABEL, DataConfig
from segpcl.errors import DataError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("imr")
    make_imagenet_r_release(d)
    return d


def build(root, **kw):
    kw.setdefault("image_size", 8)
    return imagenet_r.build_imagenet_r(DataConfig(data_root=root, **kw))


def test_release_layout_names_and_split(release, tmp_path):
    b = build(release, run_dir=tmp_path / "run")
    assert b.notes["layout"] == imagenet_r.RELEASE and b.n_classes == 200
    assert b.class_names[:3] == ["goldfish", "great white shark", "object 2"]
    assert np.bincount(b.train_targets).tolist()[:4] == [8, 8, 8, 1]  # 10 images: 8/2; 2 images: 1/1
    assert np.bincount(b.test_targets).tolist()[:4] == [2, 2, 2, 1]
    assert not set(b.train.all_paths()) & set(b.test.all_paths())
    split_file = tmp_path / "run" / imagenet_r.SPLIT_FILE
    assert b.notes["split_file"] == str(split_file)
    lines = split_file.read_text().splitlines()
    assert lines[1].startswith("# root: ") and "train" in lines and "test" in lines
    assert f"{IMR_WNIDS[0]}/" in lines[3]


def test_split_is_deterministic_and_follows_the_seed(release, tmp_path):
    a, b = build(release, seed=0), build(release, seed=0)
    assert a.train.all_paths() == b.train.all_paths() and a.test.all_paths() == b.test.all_paths()
    c = build(release, seed=1)
    assert a.test.all_paths() != c.test.all_paths()
    assert (np.bincount(a.test_targets) == np.bincount(c.test_targets)).all()


def test_split_file_is_reused_on_resume_and_readable_as_data_root(release, tmp_path):
    run = tmp_path / "run"
    first = build(release, run_dir=run, seed=0)
    again = build(release, run_dir=run, seed=5)  # resume: the written split wins over the seed
    assert again.test.all_paths() == first.test.all_paths()
    assert "reused" in again.notes["layout"]
    moved = tmp_path / "elsewhere" / imagenet_r.SPLIT_FILE
    moved.parent.mkdir()
    shutil.copy(run / imagenet_r.SPLIT_FILE, moved)
    from_list = build(moved)
    assert from_list.notes["layout"] == imagenet_r.LIST
    assert from_list.test.all_paths() == first.test.all_paths()
    assert (from_list.train_targets == first.train_targets).all()
    assert from_list.class_names == first.class_names


def test_without_readme_warns_loudly_and_class_names_file_fixes_it(tmp_path):
    make_imagenet_r_release(tmp_path, readme=False, big_classes=0)
    with pytest.warns(DataWarning, match="--class-names"):
        b = build(tmp_path)
    assert b.class_names[0] == IMR_WNIDS[0] and b.notes["names_source"].startswith("wnids")
    names = tmp_path / "names.txt"
    names.write_text(imr_readme())  # the README itself works as a class-names file (`wnid name` lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        b = build(tmp_path, class_names_file=names)
    assert b.class_names[1] == "great_white_shark"  # a names file is used verbatim


def test_presplit_with_wnids_takes_names_from_readme_beside_it(tmp_path):
    folder = make_split_imagefolder(tmp_path / "imagenet-r", IMR_WNIDS)
    (tmp_path / "README.txt").write_text(imr_readme())
    b = build(tmp_path)
    assert b.notes["layout"] == imagenet_r.PRESPLIT and b.class_names[1] == "great white shark"
    assert len(b.train) == 200 and folder.exists()


def test_presplit_with_name_folders_and_val(tmp_path):
    names = [n for n in IMR_NAMES]
    folder = make_split_imagefolder(tmp_path / "imr", names)
    (folder / "test").rename(folder / "val")
    b = build(folder)
    assert b.notes["layout"] == imagenet_r.PRESPLIT and "goldfish" in b.class_names
    assert len(b.test) == 200


def _entries(release_folder):
    out = []
    for w in IMR_WNIDS[:4]:
        files = sorted(p.name for p in (release_folder / w).iterdir())
        out += [("train", f"{w}/{f}") for f in files[1:]] + [("test", f"{w}/{files[0]}")]
    return out


def test_split_list_rapf_sections(tmp_path):
    folder = make_imagenet_r_release(tmp_path, big_classes=4)
    e = _entries(folder)
    text = "train\n" + "".join(p + "\n" for s, p in e if s == "train")
    text += "test\n" + "".join(p + "\n" for s, p in e if s == "test")
    (tmp_path / "imgr_train_test_split.txt").write_text(text)
    with pytest.warns(DataWarning, match="found 4 classes"):
        b = build(tmp_path)
    assert b.notes["layout"] == imagenet_r.LIST and b.n_classes == 4
    assert b.class_names[:2] == ["goldfish", "great white shark"]
    assert len(b.train) == 36 and len(b.test) == 4


def test_split_list_prefixed_paths_with_labels_and_train_test_files(tmp_path):
    folder = make_imagenet_r_release(tmp_path, big_classes=4)
    e = _entries(folder)
    index = {w: i for i, w in enumerate(IMR_WNIDS[:4])}
    lines = [f"{s}/{p} {index[p.split('/')[0]]}" for s, p in e]
    (tmp_path / "split.txt").write_text("\n".join(lines) + "\n")
    with pytest.warns(DataWarning):
        b = build(tmp_path)
    assert len(b.train) == 36 and b.test_targets.tolist() == [0, 1, 2, 3]
    (tmp_path / "split.txt").unlink()
    (tmp_path / "train.txt").write_text("".join(f"imagenet-r/{p} {index[p[:9]]}\n" for s, p in e if s == "train"))
    (tmp_path / "test.txt").write_text("".join(f"imagenet-r/{p} {index[p[:9]]}\n" for s, p in e if s == "test"))
    with pytest.warns(DataWarning):
        c = build(tmp_path)
    assert c.test.all_paths() == b.test.all_paths() and c.class_names == b.class_names


def test_split_list_errors(tmp_path):
    make_imagenet_r_release(tmp_path, big_classes=0)
    (tmp_path / "split.txt").write_text(f"{IMR_WNIDS[0]}/art_0.jpg\n")
    with pytest.raises(DataError, match="does not say train or test"):
        build(tmp_path)
    (tmp_path / "split.txt").write_text("train\nno/such/file.jpg\n")
    with pytest.raises(DataError, match="# root: DIR"):
        build(tmp_path)


def test_wrong_layout(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(DataError) as err:
        build(tmp_path)
    msg = str(err.value)
    for word in ("imagenet-r/<wnid>", "README.txt", "{train,test}", "imgr_train_test_split.txt", "pictures/"):
        assert word in msg


def test_corrupt_image(tmp_path):
    folder = make_imagenet_r_release(tmp_path, big_classes=0)
    corrupt(folder / IMR_WNIDS[5] / "art_0.jpg")
    corrupt(folder / IMR_WNIDS[5] / "cartoon_1.jpg")
    b = build(tmp_path)
    i = int(np.nonzero(b.train_targets == 5)[0][0])
    with pytest.warns(UnreadableImageWarning):
        assert b.train[i][1] == BAD_LABEL
    s = build(tmp_path, strict=True)
    with pytest.raises(DataError, match="segpcl data check --bench imagenet_r"):
        s.train[i]
