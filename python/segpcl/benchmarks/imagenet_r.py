"""ImageNet-R (200 ImageNet classes in renditions: art, cartoons, sketches...; 10 tasks of 20).

Layouts, tried in this order in the data set's folder:
1. an explicit split list: the data root given as the list file itself, or a folder holding
   `imgr_train_test_split.txt` (RAPF's name), `imagenet_r_split.txt` (what segpcl writes) or `split.txt`,
   or `train.txt` + `test.txt`. Lines are `path [label]`; the split comes from section lines `train` /
   `test` (RAPF's form), from a leading `train/` or `test/` in the path, or from the file name
   (train.txt / test.txt). The label is a class index or a wnid; without it the class is the path's
   parent folder. A `# root: DIR` line says where the paths are relative to;
2. pre-split ImageFolder `{train,test}/<wnid or name>/` (test/ may be val/);
3. the release folder `imagenet-r/<wnid>/*.jpg` with its README.txt: split 80/20 per class with
   DataConfig.seed and written to `<run dir>/imagenet_r_split.txt` (reused from there on resume; pass
   that file as --data-root to rebuild exactly this split elsewhere).
Class ids index the sorted class keys (wnids or folder names). Names come from README.txt lines
`n01443537 goldfish` (found beside the data); with wnids only, a loud warning points to --class-names.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..engine.nofollow import atomic_write_text
from ..errors import DataError
from ._files import (
    DataWarning,
    FileSplit,
    Locator,
    child_ci,
    describe_folder,
    make_file_benchmark,
    register_locator,
)
from .base import Benchmark, DataConfig, register_benchmark
from .imagefolder import (
    class_folders,
    clean_class_name,
    images_in,
    is_split_imagefolder,
    read_split_imagefolder,
)
from .templates import IMAGENET_R_TEMPLATES

N_CLASSES = 200
FOLDER = "imagenet-r"
SPLIT_FILE = "imagenet_r_split.txt"
SPLIT_LIST_NAMES = ("imgr_train_test_split.txt", SPLIT_FILE, "split.txt")
TEST_FRACTION = 0.2
WNID = re.compile(r"^n\d{8}$")
_README_LINE = re.compile(r"^\s*(n\d{8})\s+(\S.*?)\s*$")

LIST = "split list"
PRESPLIT = "pre-split ImageFolder"
RELEASE = "release folder (80/20 per-class split)"


def _split_list_files(folder: Path) -> list[Path] | None:
    if folder.is_file():
        return [folder]
    for name in SPLIT_LIST_NAMES:
        p = child_ci(folder, name)
        if p is not None and p.is_file():
            return [p]
    train, test = child_ci(folder, "train.txt"), child_ci(folder, "test.txt")
    if train is not None and test is not None and train.is_file() and test.is_file():
        return [train, test]
    return None


def _wnid_folders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir() and WNID.match(e.name))
    except OSError:
        return []


def _detect(folder: Path) -> str | None:
    if folder.is_file():
        return LIST if folder.suffix.lower() in (".txt", ".lst", ".list") else None
    if not folder.is_dir():
        return None
    if _split_list_files(folder):
        return LIST
    if is_split_imagefolder(folder):
        return PRESPLIT
    if _wnid_folders(folder):
        return RELEASE
    return None


LOCATOR = register_locator(
    Locator(
        bench="imagenet_r",
        aliases=(FOLDER, "imagenet_r", "imagenetr", "imgr"),
        detect=_detect,
        downloads=(("imagenet-rendition/imagenet-r", "CoOp's $DATA"),),
        expected=f"the release folder {FOLDER}/<wnid>/*.jpg (with README.txt), a pre-split ImageFolder "
        "{train,test}/<wnid or name>/, or a split list file (" + ", ".join(SPLIT_LIST_NAMES) + ", or "
        "train.txt + test.txt, lines `path [label]`)",
    )
)


# ------------------------------------------------------------------------------------------ names


def read_readme_names(path: Path) -> dict[str, str]:
    """wnid -> name from lines `n01443537 goldfish` (underscores -> spaces, first synonym)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = _README_LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2).split(",")[0].replace("_", " ").strip()
    return out


def _find_names(dirs: list[Path]) -> tuple[dict[str, str], Path | None]:
    seen = set()
    for d in dirs:
        for cand in (d, d / FOLDER):
            readme = child_ci(cand, "README.txt") if cand.is_dir() else None
            if readme is not None and readme.is_file() and readme not in seen:
                seen.add(readme)
                names = read_readme_names(readme)
                if names:
                    return names, readme
    return {}, None


def _names_for(keys: list[str], search: list[Path]) -> tuple[list[str], bool, str]:
    """(names, usable, source) for class keys that are wnids or readable folder names."""
    wnids = [k for k in keys if WNID.match(k)]
    if not wnids:
        return [clean_class_name(k) for k in keys], True, "class folder names"
    table, readme = _find_names(search)
    missing = [k for k in wnids if k not in table]
    names = [table.get(k, k) if WNID.match(k) else clean_class_name(k) for k in keys]
    if readme is None:
        return names, False, "wnids (no README.txt found)"
    if missing:
        warnings.warn(
            f"imagenet_r: {readme} names {len(wnids) - len(missing)} of the {len(wnids)} wnids; "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} keep their wnid as name. "
            "Pass --class-names FILE to name every class.",
            DataWarning,
            stacklevel=3,
        )
        return names, len(missing) < len(wnids), f"{readme} (partial)"
    return names, True, str(readme)


# ----------------------------------------------------------------------------------- split lists


def _parse_split_list(files: list[Path]) -> tuple[list[tuple[str, str, str | None]], Path | None]:
    """[(split, path, label token or None)] and the `# root:` folder if the list names one."""
    entries: list[tuple[str, str, str | None]] = []
    root: Path | None = None
    for f in files:
        implied = {"train.txt": "train", "test.txt": "test"}.get(f.name.lower())
        section: str | None = None
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"imagenet_r: cannot read split list {f}: {err}") from err
        for i, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.match(r"#\s*root\s*:\s*(.+)$", line)
                if m:
                    root = Path(m.group(1).strip())
                continue
            if line.lower() in ("train", "test", "val"):
                section = "test" if line.lower() == "val" else line.lower()
                continue
            parts = line.rsplit(None, 1)
            label = None
            if len(parts) == 2 and (parts[1].lstrip("-").isdigit() or WNID.match(parts[1])):
                path, label = parts[0].strip(), parts[1]
            else:
                path = line
            head = path.replace("\\", "/").split("/", 1)[0].lower()
            split = section or ({"train": "train", "test": "test", "val": "test"}.get(head)) or implied
            if split is None:
                raise DataError(
                    f"imagenet_r: split list {f} line {i} ({line!r}) does not say train or test: put "
                    "`train` / `test` section lines before the paths, start paths with train/ or test/, "
                    "or use two files train.txt and test.txt"
                )
            entries.append((split, path, label))
    if not entries:
        raise DataError(f"imagenet_r: split list {', '.join(map(str, files))} lists no images")
    return entries, root


def _strip_split(path: str) -> str:
    parts = path.replace("\\", "/").split("/", 1)
    if len(parts) == 2 and parts[0].lower() in ("train", "test", "val"):
        return parts[1]
    return path


def _resolver(entries, bases: list[Path]):
    """Find the base folder (and whether to drop a train/ test/ prefix) where the listed files live,
    from the first entries; then resolve every entry the same way (one stat per base, not per file)."""
    probes = [e[1] for e in entries[:: max(1, len(entries) // 5)][:5]]
    for base in bases:
        for strip in (False, True):
            if any((base / (_strip_split(p) if strip else p)).is_file() for p in probes):
                return base, strip
    return None, False


def _read_from_list(files: list[Path], data_folder: Path, extra_bases: list[Path]):
    entries, header_root = _parse_split_list(files)
    list_dir = files[0].parent
    bases = []
    for b in [header_root, list_dir, list_dir / FOLDER, data_folder, data_folder / FOLDER, *extra_bases]:
        if b is not None and b not in bases and b.is_dir():
            bases.append(b)
    base, strip = _resolver(entries, bases)
    if base is None:
        raise DataError(
            f"imagenet_r: none of the first files of split list {files[0]} (e.g. {entries[0][1]!r}) "
            f"exists under {', '.join(map(str, bases)) or list_dir}; put a `# root: DIR` line in the list "
            f"naming the folder its paths are relative to (usually the {FOLDER}/ release folder)"
        )
    rel = [_strip_split(p) if strip else p for _, p, _ in entries]
    paths = [str(base / r) for r in rel]
    splits = np.asarray([s == "train" for s, _, _ in entries])
    labels_tok = [lab for _, _, lab in entries]
    parents = [Path(r.replace("\\", "/")).parent.name for r in rel]
    if all(t is not None and not WNID.match(t) for t in labels_tok):
        y = np.asarray([int(t) for t in labels_tok], dtype=np.int64)  # type: ignore[arg-type]
        n = int(y.max()) + 1
        key_of: dict[int, str] = {}
        for yi, par in zip(y.tolist(), parents, strict=True):
            if key_of.setdefault(yi, par) != par:
                key_of[yi] = ""  # labels disagree with folders: no keys
        keys = [key_of.get(i) or f"class {i}" for i in range(n)]
        if len(set(keys)) != n:
            keys = [f"class {i}" for i in range(n)]
    else:
        tokens = [t if t is not None else par for t, par in zip(labels_tok, parents, strict=True)]
        if any(t.lstrip("-").isdigit() for t in tokens):
            raise DataError(f"imagenet_r: split list {files[0]} mixes integer labels with wnids; use one kind")
        keys = sorted(set(tokens))
        index = {k: i for i, k in enumerate(keys)}
        y = np.asarray([index[t] for t in tokens], dtype=np.int64)
    if (y < 0).any():
        raise DataError(f"imagenet_r: split list {files[0]} has negative labels")
    return keys, paths, y, splits, base


# ---------------------------------------------------------------------------------- release split


def split_release(folder: Path, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Per class (sorted wnid folders), sorted files shuffled with RandomState(seed) in class order;
    20% (at least one when a class has two or more images) go to test. Returns the wnids and
    [(split, path relative to folder)] with train entries first, each part in class then file order."""
    wnids = _wnid_folders(folder)
    rng = np.random.RandomState(seed)
    train: list[str] = []
    test: list[str] = []
    for w in wnids:
        files = [os.path.relpath(p, folder).replace(os.sep, "/") for p in images_in(folder / w)]
        n = len(files)
        n_test = 0 if n < 2 else min(n - 1, max(1, int(round(TEST_FRACTION * n))))
        perm = rng.permutation(n)
        test_idx = set(perm[:n_test].tolist())
        train.extend(f for i, f in enumerate(files) if i not in test_idx)
        test.extend(f for i, f in enumerate(files) if i in test_idx)
    return wnids, [("train", f) for f in train] + [("test", f) for f in test]


def write_split_list(path: Path, root: Path, entries: list[tuple[str, str]], seed: int) -> None:
    """RAPF's format (`train` / `test` sections, one relative path a line) with a `# root:` header."""
    lines = [
        f"# ImageNet-R {int((1 - TEST_FRACTION) * 100)}/{int(TEST_FRACTION * 100)} per-class split, "
        f"seed {seed}, written by segpcl",
        f"# root: {root.resolve()}",
    ]
    for split in ("train", "test"):
        lines.append(split)
        lines.extend(p for s, p in entries if s == split)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")  # in the run folder: never through a link


# ---------------------------------------------------------------------------------------- builder


@register_benchmark(
    "imagenet_r",
    n_classes=N_CLASSES,
    initial=20,
    increment=20,
    description="ImageNet-R, 200 classes in 10 tasks of 20 (imagenet-r/<wnid>/ split 80/20, "
    "{train,test}/<class>/, or a split list)",
    is_present=LOCATOR.is_present,
)
def build_imagenet_r(cfg: DataConfig) -> Benchmark:
    folder, layout = LOCATOR.require(cfg)
    root = Path(cfg.data_root).expanduser()  # type: ignore[arg-type]
    notes: dict = {"layout": layout, "root": str(folder)}
    search = [folder, folder.parent, root, root.parent] if folder.is_dir() else [folder.parent, root.parent]

    if layout == RELEASE and cfg.run_dir is not None and (Path(cfg.run_dir) / SPLIT_FILE).is_file():
        # Resume: the split this run was started with.
        layout = notes["layout"] = f"{RELEASE}, split reused from the run dir"
        files: list[Path] | None = [Path(cfg.run_dir) / SPLIT_FILE]
        notes["split_file"] = str(files[0])
    elif layout == LIST:
        files = _split_list_files(folder)
        notes["split_file"] = ", ".join(map(str, files or []))
    else:
        files = None

    if files is not None:
        data_folder = folder if folder.is_dir() else folder.parent
        keys, paths, y, is_train, base = _read_from_list(files, data_folder, [root])
        search = [base, base.parent, *search]
        split = FileSplit.from_mask(paths, y, is_train)
    elif layout == PRESPLIT:
        s = read_split_imagefolder(folder)
        keys = s.classes
        split = FileSplit(s.train_paths, s.train_labels, s.test_paths, s.test_labels)
    else:
        wnids, entries = split_release(folder, cfg.seed)
        if not entries:
            raise DataError(f"imagenet_r: the wnid folders under {folder} hold no images; {describe_folder(folder)}")
        keys = wnids
        index = {w: i for i, w in enumerate(wnids)}
        split = FileSplit(
            train_paths=[str(folder / p) for s, p in entries if s == "train"],
            train_labels=np.asarray([index[p.split("/", 1)[0]] for s, p in entries if s == "train"], dtype=np.int64),
            test_paths=[str(folder / p) for s, p in entries if s == "test"],
            test_labels=np.asarray([index[p.split("/", 1)[0]] for s, p in entries if s == "test"], dtype=np.int64),
        )
        notes["split_seed"] = cfg.seed
        if cfg.run_dir is not None:
            target = Path(cfg.run_dir) / SPLIT_FILE
            write_split_list(target, folder, entries, cfg.seed)
            notes["split_file"] = str(target)
        else:
            notes["split_file"] = None
        extra = [c for c in class_folders(folder) if not WNID.match(c)]
        if extra:
            notes["ignored_folders"] = extra

    names, usable, source = _names_for(keys, search)
    notes["names_source"] = source
    notes["class_keys"] = list(keys)  # a peer's class order holds only for wnid keys (benchmarks.protocol)
    return make_file_benchmark(
        "imagenet_r",
        cfg,
        split,
        class_names=names,
        class_keys=keys,
        templates=IMAGENET_R_TEMPLATES,
        expected_classes=N_CLASSES,
        notes=notes,
        names_usable=usable,
    )
