"""Options and helpers several commands share: the run-defining options of `train` and `ablate` and how they
become a typed config."""

from __future__ import annotations

import click


def _overrides(pairs: list[tuple[str, object]], sets: tuple[str, ...]) -> dict:
    """The options the user gave (None/False: not given), then every --set on top."""
    from ..config import parse_set, set_dotted

    out: dict = {}
    for key, value in pairs:
        if value is not None and value != () and value is not False:
            set_dotted(out, key, value)
    return parse_set(list(sets), into=out)


def _parse_seeds(seeds: str) -> list[int]:
    """`--seeds 1,2,3` -> [1, 2, 3] (the range is checked with the rest of the config)."""
    from ..errors import ConfigError

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, e.g. 1,2,3; got {seeds!r}") from None
    if not seed_list:
        raise ConfigError("--seeds needs at least one seed")
    return seed_list


def _zs_pairs(items: tuple[str, ...]) -> dict[str, str] | None:
    from ..errors import ConfigError

    if not items:
        return None
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--zs-eval takes NAME=PATH (e.g. food101=/data/food-101/test), got {item!r}")
        name, path = item.split("=", 1)
        out[name] = path
    return out


PRESET = "the benchmark's preset"
SEED_RANGE = click.IntRange(0, 2**32 - 1)


def _method_names() -> str:
    from ..method.rows import METHODS, PEER_METHODS

    return ", ".join([*METHODS, *PEER_METHODS])


def _ablation_methods() -> str:
    """Every row of the paper's tables (segpcl-cliponly is the lora+acgd+tsgr+pt configuration), then the
    setting rows (analysis/ablation_table.py SETTING_ROWS)."""
    from ..analysis.ablation_table import SETTING_ROWS
    from ..method.rows import METHODS

    return ",".join([*(m for m in METHODS if m != "segpcl-cliponly"), *SETTING_ROWS])


def _train_options(fn=None, *, seed: bool = True):
    """The options `train` and `ablate` share (`ablate` takes --seeds instead of --seed)."""
    if fn is None:
        return lambda f: _train_options(f, seed=seed)
    options = [
        click.option("--bench", default="toy", show_default=True, help="Benchmark (see `segpcl benches`)."),
        click.option("--data-root", default=None, show_default="none", help="Folder of the benchmark's data set."),
        click.option(
            "--model",
            "arch",
            default=None,
            show_default=PRESET,
            help="open_clip architecture, e.g. ViT-L-14-quickgelu.",
        ),
        click.option(
            "--pretrained", default=None, show_default=PRESET, help="Local weights file (or an offline open_clip tag)."
        ),
        click.option(
            "--tokenizer",
            default=None,
            show_default="beside --pretrained, else the local HF cache",
            help="Local tokenizer folder, for models whose tokenizer comes from the Hugging Face hub (SigLIP).",
        ),
        click.option(
            "--epochs", type=click.IntRange(min=1), default=None, show_default=PRESET, help="Epochs per task."
        ),
        click.option("--seed", type=SEED_RANGE, default=None, show_default="0", help="Random seed (0 .. 2**32-1).")
        if seed
        else None,
        click.option("--device", default=None, show_default="auto", help="cpu, cuda, cuda:N or auto."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None, show_default=PRESET),
        click.option(
            "--max-tasks",
            type=click.IntRange(min=1),
            default=None,
            show_default="all",
            help="Run only the first N tasks of the stream.",
        ),
        click.option(
            "--val-fraction",
            type=click.FloatRange(0, 1, max_open=True),
            default=None,
            show_default="0: train on all, evaluate on test; segpcl tune: 0.1",
            help="Hold out this share of each class's training images as a validation set and evaluate on it, "
            "never on test (data.val_fraction). UCF101 with CoOp's json: its val list validates and its train list "
            "trains (with 0, train + val both train); the toy: 30 rendered images per class, all 80 train.",
        ),
        click.option(
            "--log",
            "log_kinds",
            type=click.Choice(["tensorboard", "wandb"]),
            multiple=True,
            show_default="metrics.json and metrics.csv only",
            help="Also write TensorBoard event files to <run>/tensorboard (pip install 'segpcl[tensorboard]'), or "
            "log to Weights & Biases, offline unless logged in, files under <run>/wandb (pip install 'segpcl[wandb]').",
        ),
        click.option(
            "--initial",
            type=click.IntRange(min=1),
            default=None,
            show_default=PRESET,
            help="Classes in the first task.",
        ),
        click.option(
            "--increment", type=click.IntRange(min=1), default=None, show_default=PRESET, help="Classes per later task."
        ),
        click.option(
            "--class-order",
            default=None,
            show_default="PyCIL's seed-1993 order",
            help="seed1993 (PyCIL's permutation), rapf or mgclip (the order file that peer's repository ships for "
            "the benchmark), or a file with a class order (YAML/JSON/text).",
        ),
        click.option(
            "--class-names", default=None, show_default="the benchmark's", help="File overriding class names."
        ),
        click.option(
            "--templates",
            default=None,
            show_default="ensemble: the benchmark's",
            help="ensemble, single ('a good photo of a {}.', as RAPF and MG-CLIP prompt), or a file of prompt "
            "templates, one per line with {}.",
        ),
        click.option("--strict", is_flag=True, default=False, show_default="off", help="Fail on unreadable images."),
        click.option(
            "--diagnose",
            is_flag=True,
            default=False,
            show_default="off",
            help="Boundary-vs-core drift diagnostic at the end of every task t >= 2 (metrics.json drift, "
            "plots/drift.svg).",
        ),
        click.option(
            "--download",
            is_flag=True,
            default=False,
            show_default="off",
            help="Allow torchvision to download (CIFAR100).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=None,
            show_default=PRESET,
            help="DataLoader worker processes.",
        ),
        click.option(
            "--zs-eval",
            multiple=True,
            show_default="none",
            help="NAME=PATH of an ImageFolder set for zero-shot retention.",
        ),
        click.option(
            "--config", "config_file", default=None, show_default="none", help="YAML config file (over the preset)."
        ),
        click.option(
            "--preset",
            default=None,
            show_default="the benchmark's own",
            help="Protocol preset: revision, revision-20, or a preset file name such as cifar100-revision.",
        ),
        click.option(
            "--set", "sets", multiple=True, show_default="none", help="Override any config key: section.key=value."
        ),
    ]
    for option in reversed([o for o in options if o is not None]):
        fn = option(fn)
    return fn


def _config_from_options(bench, method, kw) -> object:
    from ..config import resolve_config

    pairs = [
        ("data.data_root", kw["data_root"]),
        ("model.arch", kw["arch"]),
        ("model.pretrained", kw["pretrained"]),
        ("model.tokenizer", kw["tokenizer"]),
        ("model.precision", kw["precision"]),
        ("train.epochs", kw["epochs"]),
        ("train.seed", kw["seed"]),
        ("train.device", kw["device"]),
        ("data.initial", kw["initial"]),
        ("data.increment", kw["increment"]),
        ("data.max_tasks", kw["max_tasks"]),
        ("data.val_fraction", kw.get("val_fraction")),
        ("train.log", list(kw["log_kinds"]) or None),
        ("data.class_order", kw["class_order"]),
        ("data.class_names", kw["class_names"]),
        ("data.templates", kw["templates"]),
        ("data.strict", kw["strict"]),
        ("data.download", kw["download"]),
        ("data.num_workers", kw["workers"]),
        ("data.zs_eval", _zs_pairs(kw["zs_eval"])),
        ("method.name", method),
        ("train.diagnose", kw["diagnose"]),
    ]
    return resolve_config(bench, kw["config_file"], _overrides(pairs, kw["sets"]), preset=kw.get("preset"))
