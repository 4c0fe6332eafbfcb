"""The revision's protocol presets (ViT-B/16) next to the benchmarks' own (summary, ViT-L/14): `--preset`."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml

from segpcl.benchmarks.base import get_benchmark_info, task_sizes_from
from segpcl.config import all_preset_names, load_preset, preset_names, resolve_config
from segpcl.errors import ConfigError

REVISION = ["cifar100", "imagenet_r", "cub200", "imagenet_sub", "ucf101"]
PROTOCOL_FILES = [n for n in all_preset_names() if "-" in n or n in ("imagenet_sub", "ucf101")]


def test_protocol_presets_are_not_benchmark_presets():
    assert "cifar100-revision" in all_preset_names() and "cifar100-revision" not in preset_names()
    assert {"imagenet_sub", "ucf101"} <= set(preset_names())


@pytest.mark.parametrize("name", PROTOCOL_FILES)
def test_every_protocol_preset_value_says_paper_or_our_reading(name):
    text = resources.files("segpcl.presets").joinpath(f"{name}.yaml").read_text()
    leaves = [ln for ln in text.splitlines() if re.match(r"^\s*\w+:\s*\S", ln)]
    assert leaves
    for line in leaves:
        assert "# paper" in line or "# our reading" in line, line
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("bench", REVISION)
def test_revision_preset_holds_the_revision_values(bench):
    cfg = resolve_config(bench, preset="revision")
    assert cfg.data.bench == bench and cfg.model.arch == "ViT-B-16-quickgelu"
    assert (cfg.lora.rank, cfg.lora.train_a, cfg.lora.towers) == (32, False, ["visual", "text"])
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == ("sgd", 1e-3, 128, 10)
    m = cfg.method
    assert (m.seed_mode, m.k_seed, m.pgd_steps, m.pgd_gamma, m.tau, m.lambda_acgd) == (
        "per_class",
        5,
        10,
        1.5e-3,
        20,
        5,
    )
    assert (m.tsgr_mode, m.tsgr_k, m.tsgr_tau, m.lambda_tsgr) == ("rooted", 10, 0.05, 1)
    assert (m.prototype_space, m.fusion, m.beta) == ("raw", "logits", 0.5)
    sizes = task_sizes_from(get_benchmark_info(bench).n_classes, cfg.data.initial, cfg.data.increment)
    assert len(sizes) == 10
    assert resolve_config("toy", preset=f"{bench}-revision") == cfg  # the full file name selects the benchmark


def test_the_summary_presets_stay_the_default():
    assert resolve_config("cifar100").model.arch == "ViT-L-14-quickgelu"
    assert resolve_config("imagenet_sub") == resolve_config("imagenet_sub", preset="revision")


@pytest.mark.parametrize(("bench", "sizes"), [("cifar100", [5] * 20), ("imagenet_r", [10] * 20)])
def test_twenty_step_presets(bench, sizes):
    cfg = resolve_config(bench, preset="revision-20")
    assert task_sizes_from(get_benchmark_info(bench).n_classes, cfg.data.initial, cfg.data.increment) == sizes
    assert cfg.model.arch == "ViT-B-16-quickgelu" and cfg.method.k_seed == 5  # the rest comes from revision
    assert "extends" not in load_preset(f"{bench}-revision-20")


def test_preset_errors():
    with pytest.raises(ConfigError, match="no preset 'nope' for benchmark cifar100; its protocol presets: revision"):
        resolve_config("cifar100", preset="nope")
    with pytest.raises(ConfigError, match="is for benchmark cifar100, not cub200"):
        resolve_config("cub200", preset="cifar100-revision")


def test_cli_preset_and_overrides(tmp_path):
    from segpcl.cli import _config_from_options

    kw = {k: None for k in ("data_root", "arch", "pretrained", "precision", "epochs", "seed", "device", "initial")}
    kw.update({k: None for k in ("increment", "class_order", "class_names", "templates", "workers", "config_file")})
    kw.update(strict=False, download=False, zs_eval=(), sets=("train.epochs=2",), preset="revision-20")
    kw.update(max_tasks=None, log_kinds=(), diagnose=False, tokenizer=None)
    cfg = _config_from_options("cifar100", None, kw)
    assert cfg.data.initial == 5 and cfg.train.epochs == 2 and cfg.model.arch == "ViT-B-16-quickgelu"
