"""Shared benchmark machinery: override files, templates, the image dataset (corrupt files, strict,
pickling for DataLoader workers), the ImageFolder reader, presets, the registry."""

from __future__ import annotations

import pickle
import re
import warnings
from importlib import resources

import numpy as np
import pytest
import torch
import yaml
from fakedata import corrupt, make_split_imagefolder, truncate, write_image
from PIL import Image
from torch.utils.data import DataLoader

from segpcl.benchmarks._files import ImageFileDataset, UnreadableImageWarning, load_rgb, make_transform
from segpcl.benchmarks.base import BAD_LABEL, get_benchmark_info, list_benchmarks
from segpcl.benchmarks.class_files import load_class_names, load_class_order, load_templates
from segpcl.benchmarks.imagefolder import clean_class_name, load_imagefolder
from segpcl.benchmarks.templates import GENERIC_TEMPLATES, templates_for
from segpcl.config import resolve_config
from segpcl.errors import ConfigError, DataError

PAPER_BENCHES = ["cifar100", "cub200", "imagenet_r", "cars196", "omnibenchmark"]


# ---------------------------------------------------------------------------------------- registry


def test_registry_has_the_five_paper_benchmarks_with_their_splits():
    infos = {i.name: i for i in list_benchmarks()}
    expected = {
        "cifar100": (100, 10, 10),
        "cub200": (200, 20, 20),
        "imagenet_r": (200, 20, 20),
        "cars196": (196, 20, 20),
        "omnibenchmark": (300, 30, 30),
    }
    for name, (n, initial, increment) in expected.items():
        info = infos[name]
        assert (info.n_classes, info.initial, info.increment) == (n, initial, increment)
        assert info.needs_data and not info.is_present(None)
    from segpcl.benchmarks.base import task_sizes_from

    assert task_sizes_from(196, 20, 20) == [20] * 9 + [16]


def test_missing_data_root_says_what_to_pass(tmp_path):
    from segpcl.benchmarks.base import DataConfig

    for name in PAPER_BENCHES:
        with pytest.raises(DataError, match="--data-root"):
            get_benchmark_info(name).builder(DataConfig(data_root=None))
        with pytest.raises(DataError, match="does not exist"):
            get_benchmark_info(name).builder(DataConfig(data_root=tmp_path / "nope"))


# ---------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("bench", PAPER_BENCHES)
def test_preset_loads_and_sets_the_paper_model(bench):
    cfg = resolve_config(bench)
    info = get_benchmark_info(bench)
    assert cfg.data.bench == bench
    assert (cfg.data.initial, cfg.data.increment) == (info.initial, info.increment)
    assert cfg.model.arch == "ViT-L-14-quickgelu"
    assert cfg.method.name == "segpcl"
    assert cfg.method.lambda_acgd > 0 and cfg.method.lambda_tsgr > 0


@pytest.mark.parametrize("bench", PAPER_BENCHES)
def test_every_preset_value_says_paper_or_our_reading(bench):
    text = resources.files("segpcl.presets").joinpath(f"{bench}.yaml").read_text()
    leaves = [ln for ln in text.splitlines() if re.match(r"^\s+\w+:\s*\S", ln)]
    assert leaves
    for line in leaves:
        assert "# paper" in line or "# our reading" in line, line
    assert yaml.safe_load(text)  # still plain YAML


# ------------------------------------------------------------------------------------- class files


def test_class_order_forms(tmp_path):
    perm = [3, 0, 2, 1]
    forms = {
        "a.yaml": "class_order: [3, 0, 2, 1]\n",  # RAPF / Continual-CLIP
        "b.yaml": "- 3\n- 0\n- 2\n- 1\n",
        "c.json": "[3, 0, 2, 1]",
        "d.txt": "3 0\n2, 1\n",
        "e.txt": "# my order\n3\n0\n2\n1\n",
        "f.json": '{"class_order": [3, 0, 2, 1]}',
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        assert load_class_order(tmp_path / name, 4) == perm, name


@pytest.mark.parametrize(
    "text, words",
    [
        ("[0, 1, 1, 2]", ["permutation", "missing [3]", "repeated [1]"]),
        ("[0, 1, 2]", ["3 entries for 4 classes", "missing [3]"]),
        ("[0, 1, 2, 7]", ["out of range [7]"]),
        ("[0, 1, two, 3]", ["'two' is not a class index"]),
    ],
)
def test_class_order_must_be_a_permutation(tmp_path, text, words):
    p = tmp_path / "order.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_class_order(p, 4)
    for w in words:
        assert w in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_class_order(tmp_path / "absent.yaml", 4)


def test_class_names_forms(tmp_path):
    names = ["red fox", "sea anemone", "great white shark"]
    forms = {
        "plain.txt": "red fox\nsea anemone\n\ngreat white shark\n",
        "ids0.txt": "2 great white shark\n0 red fox\n1 sea anemone\n",
        "ids1.txt": "1 red fox\n2 sea anemone\n3 great white shark\n",  # CUB classes.txt style
        "list.json": '["red fox", "sea anemone", "great white shark"]',
        "map.yaml": "0: red fox\n1: sea anemone\n2: great white shark\n",
    }
    for fname, text in forms.items():
        (tmp_path / fname).write_text(text)
        assert load_class_names(tmp_path / fname, 3) == names, fname
    keys = ["n02119022", "n01914609", "n01484850"]
    (tmp_path / "keys.txt").write_text("n01484850 great white shark\nn02119022 red fox\nn01914609 sea anemone\n")
    assert load_class_names(tmp_path / "keys.txt", 3, keys=keys) == names
    # a README-like file: prose plus `key name` lines
    (tmp_path / "readme.txt").write_text("Some prose here.\n\n" + (tmp_path / "keys.txt").read_text())
    assert load_class_names(tmp_path / "readme.txt", 3, keys=keys) == names


def test_class_names_errors(tmp_path):
    p = tmp_path / "names.txt"
    p.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="2 non-empty lines for 3 classes"):
        load_class_names(p, 3)
    p.write_text("0 a\n1 b\n5 c\n")
    with pytest.raises(ConfigError, match="ids must cover"):
        load_class_names(p, 3)


def test_templates_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("# mine\na photo of a {}.\n\nart of the {}.\n")
    assert load_templates(p) == ["a photo of a {}.", "art of the {}."]
    p.write_text("a photo of a thing.\n")
    with pytest.raises(ConfigError, match="exactly one `{}`"):
        load_templates(p)
    p.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no templates"):
        load_templates(p)


def test_template_ensembles():
    for bench in PAPER_BENCHES:
        ts = templates_for(bench)
        assert 4 <= len(ts) <= 8 and all(t.count("{}") == 1 for t in ts)
    assert any("type of bird" in t for t in templates_for("cub200"))
    assert any("type of car" in t for t in templates_for("cars196"))
    assert templates_for("something else") == GENERIC_TEMPLATES


# ---------------------------------------------------------------------------------- image dataset


def test_transform_gives_unnormalised_square_rgb(tmp_path):
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (30, 20), (255, 0, 0, 10)).save(rgba)
    gray = tmp_path / "g.jpg"
    Image.new("L", (20, 40), 128).save(gray)
    pal = tmp_path / "p.gif"
    Image.new("P", (12, 12), 3).save(pal)
    ds = ImageFileDataset([rgba, gray, pal], [0, 1, 2], image_size=16)
    for i in range(3):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == i
        assert 0.0 <= x.min() and x.max() <= 1.0
    x, _ = ds[0]
    assert torch.allclose(x[0], torch.ones(16, 16)) and x[1].max() == 0  # red, alpha dropped
    # shorter side resized then centre-cropped: a 40x20 image keeps its centre
    assert make_transform(8)(Image.new("RGB", (40, 20))).shape == (3, 8, 8)


def test_fast_decode_keeps_large_jpegs_at_least_target_size(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(p)
    im = load_rgb(p, draft_size=224)
    assert min(im.size) >= 224 and max(im.size) < 1600


def test_corrupt_image_is_skipped_with_one_warning_or_raises_with_strict(tmp_path):
    good = write_image(tmp_path / "ok.jpg")
    bad = corrupt(tmp_path / "bad.jpg")
    cut = truncate(tmp_path / "cut.jpg")
    missing = tmp_path / "gone.jpg"
    ds = ImageFileDataset([good, bad, cut, missing], [4, 5, 6, 7], image_size=8, check_hint="segpcl data check X")
    with pytest.warns(UnreadableImageWarning) as rec:
        items = [ds[i] for i in range(4)]
        ds[1]  # the same file again: no second warning
    assert [y for _, y in items] == [4, BAD_LABEL, BAD_LABEL, BAD_LABEL]
    assert all(torch.count_nonzero(x) == 0 for x, _ in items[1:])
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 3 and any(str(bad) in m for m in msgs) and any(str(cut) in m for m in msgs)
    strict = ImageFileDataset([bad], [0], image_size=8, strict=True, check_hint="segpcl data check X")
    with pytest.raises(DataError) as err:
        strict[0]
    assert str(bad) in str(err.value) and "segpcl data check X" in str(err.value)


def test_dataset_pickles_and_loads_through_workers(tmp_path):
    paths = [write_image(tmp_path / f"{i}.jpg") for i in range(6)]
    corrupt(paths[2])
    ds = ImageFileDataset(paths, np.arange(6), image_size=8)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.all_paths() == ds.all_paths() and (clone.targets == ds.targets).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(DataLoader(ds, batch_size=3, num_workers=1))
    labels = torch.cat([b[1] for b in batches]).tolist()
    assert labels == [0, 1, BAD_LABEL, 3, 4, 5]
    assert batches[0][0].shape == (3, 3, 8, 8)


# ---------------------------------------------------------------------------------------- ImageFolder


def test_clean_class_name():
    assert clean_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert clean_class_name("aquarium_fish") == "aquarium fish"
    assert clean_class_name("12_red_fox") == "red fox"
    assert clean_class_name("3D_printer") == "3D printer"
    assert clean_class_name("AM General Hummer SUV 2000") == "AM General Hummer SUV 2000"


def test_load_imagefolder_for_zero_shot_sets(tmp_path):
    root = tmp_path / "food"
    for cls in ["apple_pie", "baby_back_ribs", "beignets"]:
        for k in range(2):
            write_image(root / cls / f"{k}.jpg")
    (root / "beignets" / "notes.txt").write_text("not an image")
    ds, names = load_imagefolder(root, image_size=8)
    assert names == ["apple pie", "baby back ribs", "beignets"]
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds[5][0].shape == (3, 8, 8)
    # a pre-split folder: the test split is used
    split = make_split_imagefolder(tmp_path / "pets", ["Abyssinian", "beagle"], per_split=(3, 1))
    ds, names = load_imagefolder(split, image_size=8)
    assert names == ["Abyssinian", "beagle"] and len(ds) == 2
    with pytest.raises(DataError, match="does not exist"):
        load_imagefolder(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_imagefolder(tmp_path / "empty", 8)
