"""Shared machinery of the benchmarks read from local folders: the image transform, PIL loading with the
corrupt-file policy, picklable datasets (image files, in-memory arrays), finding a data set's folder
under a data root, and assembling the final `Benchmark` (class-name and template overrides).

Images come out as float tensors [3, S, S] in [0, 1]: shorter side resized to S (bicubic), centre crop,
no normalisation (the model normalises, PGD clamps to [0, 1]). High-depth images (16-bit PNG and TIFF, 32-bit
integer or float) are scaled to 8 bits, not clipped. A file that cannot be read, or whose size is above the
pixel cap (data.max_pixels, far below PIL's decompression-bomb limit), gives a zero image with label BAD_LABEL
and one warning per file, or a DataError with `strict`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from ..errors import DataError
from .base import BAD_LABEL, Benchmark, DataConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DataWarning(UserWarning):
    """Something about a data set the user should know (unusable class names, odd class counts...)."""


class UnreadableImageWarning(DataWarning):
    """An image file could not be read; the sample is skipped (label BAD_LABEL)."""


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------------------------- images


def make_transform(image_size: int) -> transforms.Compose:
    """Resize the shorter side to `image_size` (bicubic), centre crop, to a float tensor in [0, 1]."""
    return transforms.Compose(
        [
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
        ]
    )


MAX_PIXELS = 40_000_000
"""Default pixel cap (data.max_pixels): a 40-megapixel image decodes to 120 MB of RGB; PIL itself warns only
above 89 and refuses above 179 megapixels, and one such image stalls a task for minutes."""


class ImageTooLarge(DataError):
    """An image whose width x height is above the pixel cap; it is skipped like an unreadable file."""


def load_rgb(
    path: str | os.PathLike, draft_size: int | None = None, max_pixels: int | None = MAX_PIXELS
) -> Image.Image:
    """Decode an image file fully and convert it to 8-bit RGB. Raises ImageTooLarge above `max_pixels` (read
    from the header, before decoding), else whatever PIL raises on a bad file.

    With `draft_size`, a large JPEG is decoded at a reduced DCT scale whose both sides stay
    >= draft_size (so the later resize to draft_size is still a downscale): several times faster
    for multi-megapixel photos, identical for images already near the target size.
    """
    with Image.open(path) as im:
        width, height = im.size
        if max_pixels and width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} is {width * height / 1e6:.1f} megapixels, above the cap of "
                f"{max_pixels / 1e6:g} (data.max_pixels; raise it with --set data.max_pixels=N)"
            )
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (draft_size, draft_size))
        if im.mode in HIGH_DEPTH_MODES:
            return high_depth_to_rgb(im)
        if im.mode == "P" and "transparency" in im.info:
            return im.convert("RGBA").convert("RGB")
        return im.convert("RGB")


HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""Single-channel modes of more than 8 bits, which PIL's convert("RGB") clips at 255 (almost all white)."""


def high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image as 8-bit RGB: 16-bit data (every I;16 mode, and mode I
    within 0..65535, as PNG and TIFF readers hand it over) scaled by 255/65535, floats within [0, 1] by 255,
    anything else stretched from its own minimum to its maximum."""
    a = np.asarray(im, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        scaled = a * (255 / 65535)
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        scaled = a * 255
    else:
        scaled = (a - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(a)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


_WARNED: set[str] = set()


def _unreadable(path: str, err: BaseException, strict: bool, hint: str) -> None:
    if isinstance(err, ImageTooLarge):
        _too_large(path, err, strict)
        return
    reason = f"{type(err).__name__}: {err}"
    if strict:
        raise DataError(
            f"cannot read image file {path} ({reason}). Run `{hint}` to list every unreadable file, "
            "then replace or delete them (or run without --strict to skip them with a warning)."
        ) from err
    if path not in _WARNED:
        _WARNED.add(path)
        warnings.warn(
            f"skipping unreadable image file {path} ({reason}); it is counted as skipped. "
            f"`{hint}` lists every such file; --strict makes this an error.",
            UnreadableImageWarning,
            stacklevel=3,
        )


def _too_large(path: str, err: ImageTooLarge, strict: bool) -> None:
    if strict:
        raise ImageTooLarge(
            f"image file {path} is too large: {err}; or run without --strict to skip such images with a warning"
        ) from None
    if path not in _WARNED:
        _WARNED.add(path)
        warnings.warn(f"skipping image file {path}: {err}; it is counted as skipped", UnreadableImageWarning, 4)


class _LabelledImages(Dataset):
    """A dataset of images with integer class ids in ``self.labels`` (int64 [N]), exposed as ``.targets``."""

    labels: np.ndarray

    @property
    def targets(self) -> np.ndarray:
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)


class ImageFileDataset(_LabelledImages):
    """Image files with integer labels. Picklable and light (paths held in one numpy byte array, so
    DataLoader workers do not copy millions of Python strings on write)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int] | np.ndarray,
        image_size: int,
        strict: bool = False,
        check_hint: str = "segpcl data check",
        fast_decode: bool = True,
        max_pixels: int | None = MAX_PIXELS,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = np.array([os.fsencode(os.fspath(p)) for p in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.image_size = int(image_size)
        self.strict = bool(strict)
        self.check_hint = check_hint
        self.fast_decode = bool(fast_decode)
        self.max_pixels = max_pixels
        self.transform = make_transform(self.image_size)

    def path(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def all_paths(self) -> list[str]:
        return [os.fsdecode(p) for p in self.paths]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.path(i)
        try:
            image = load_rgb(path, self.image_size if self.fast_decode else None, self.max_pixels)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, zlib/struct errors...
            _unreadable(path, err, self.strict, self.check_hint)
            return torch.zeros(3, self.image_size, self.image_size), BAD_LABEL
        return self.transform(image), int(self.labels[i])


class ArrayImageDataset(_LabelledImages):
    """uint8 RGB images [N, H, W, 3] held in memory (CIFAR), served through the same transform."""

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, image_size: int):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.image_size = int(image_size)
        self.transform = make_transform(self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


# ------------------------------------------------------------------------------------- finding folders


def child_ci(folder: Path, name: str) -> Path | None:
    """`folder/name`, matching the name case-insensitively; None if absent."""
    exact = folder / name
    if exact.exists():
        return exact
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower() == name.lower():
                    return Path(entry.path)
    except OSError:
        pass
    return None


def describe_folder(folder: Path, limit: int = 12) -> str:
    """A short listing of what is in a folder, for error messages."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name + ("/" if e.is_dir() else "") for e in entries)
    except OSError as err:
        return f"(cannot list it: {err})"
    if not names:
        return "(it is empty)"
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return "it holds: " + ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class Locator:
    """How to find one benchmark's data under a data root: the folder itself, a conventional subfolder (one or
    two levels down), or where a download tool put it inside the folder it created (names matched
    case-insensitively)."""

    bench: str
    aliases: tuple[str, ...]
    """Conventional folder names of the data set, first = the canonical one."""
    detect: Callable[[Path], str | None]
    """folder (or file) -> layout name, or None if this is not a layout of the data set. Never raises."""
    expected: str
    """The accepted layouts, in words, for error messages."""
    diagnose: Callable[[Path], str | None] | None = None
    """folder -> a precise message if the folder holds an incomplete layout; None otherwise."""
    downloads: tuple[tuple[str, str], ...] = ()
    """(sub-path, the download that creates it): where the data sits inside the folder a download made (Kaggle's
    `ILSVRC/Data/CLS-LOC`), tried under the data root and under each alias folder."""

    def candidates(self, root: Path) -> list[Path]:
        out = [root]
        if root.is_dir():
            for a in self.aliases:
                sub = child_ci(root, a)
                if sub is not None and sub.is_dir() and sub not in out:
                    out.append(sub)
                    for b in self.aliases:
                        subsub = child_ci(sub, b)
                        if subsub is not None and subsub.is_dir() and subsub not in out:
                            out.append(subsub)
        for base in list(out):
            for rel, _ in self.downloads:
                sub = _descend_ci(base, rel)
                if sub is not None and sub.is_dir() and sub not in out:
                    out.append(sub)
        return out

    def looked_for(self) -> str:
        """Where `find` looks, in words, for error messages."""
        where = f"that folder itself or a parent holding it under one of the names {', '.join(self.aliases)}"
        if self.downloads:
            where += "; or the folder a download created, with the data at " + ", ".join(
                f"{rel}/ ({source})" for rel, source in self.downloads
            )
        return where

    def find(self, root: Path | str | None) -> tuple[Path, str] | None:
        if root is None:
            return None
        root = Path(root).expanduser()
        if not root.exists():
            return None
        for c in self.candidates(root):
            layout = self.detect(c)
            if layout:
                return c, layout
        return None

    def is_present(self, root: Path | str | None) -> bool:
        try:
            return self.find(root) is not None
        except OSError:
            return False

    def require(self, cfg: DataConfig) -> tuple[Path, str]:
        """The data set's folder and layout under cfg.data_root, or a DataError saying what was expected."""
        root = data_root_of(cfg, self)
        found = self.find(root)
        if found is not None:
            return found
        if self.diagnose is not None:
            for c in self.candidates(root):
                msg = self.diagnose(c)
                if msg:
                    raise DataError(f"{self.bench}: {msg}")
        raise DataError(
            f"{self.bench}: no accepted layout found under {root}; {describe_folder(root)}. "
            f"Expected {self.expected} (looked in {self.looked_for()}). See docs/DATASETS.md."
        )


def _descend_ci(base: Path, rel: str) -> Path | None:
    """`base/rel` for a relative path of several parts, each matched case-insensitively; None if absent."""
    for part in rel.split("/"):
        found = child_ci(base, part) if base.is_dir() else None
        if found is None:
            return None
        base = found
    return base


def data_root_of(cfg: DataConfig, loc: Locator) -> Path:
    if cfg.data_root is None:
        raise DataError(
            f"benchmark {loc.bench} reads a local data set: pass --data-root DIR, where DIR holds "
            f"{loc.expected} (or a parent folder holding it as {loc.aliases[0]}/)"
        )
    root = Path(cfg.data_root).expanduser()
    if not root.exists():
        raise DataError(
            f"data root {root} does not exist: pass --data-root pointing at the folder that holds "
            f"{loc.expected} (or a parent holding it as {loc.aliases[0]}/)"
        )
    return root


_LOCATORS: dict[str, Locator] = {}


def register_locator(loc: Locator) -> Locator:
    _LOCATORS[loc.bench] = loc
    return loc


def get_locator(bench: str) -> Locator | None:
    return _LOCATORS.get(bench)


def check_hint(bench: str, root: Path | str | None) -> str:
    return f"segpcl data check --bench {bench} --data-root {root}"


# ------------------------------------------------------------------------------------- assembling


@dataclass(frozen=True)
class FileSplit:
    """The image files of a data set's train and test splits, with their class ids."""

    train_paths: list[str]
    train_labels: np.ndarray
    test_paths: list[str]
    test_labels: np.ndarray

    @classmethod
    def from_mask(cls, paths: list[str], labels: np.ndarray, is_train: np.ndarray) -> FileSplit:
        """Split one list of files (and its labels) by a boolean train mask, keeping the order."""
        return cls(
            train_paths=[p for p, t in zip(paths, is_train, strict=True) if t],
            train_labels=labels[is_train],
            test_paths=[p for p, t in zip(paths, is_train, strict=True) if not t],
            test_labels=labels[~is_train],
        )


def make_benchmark(
    name: str,
    cfg: DataConfig,
    *,
    class_names: list[str],
    class_keys: list[str] | None,
    templates: Sequence[str],
    train: Dataset,
    test: Dataset,
    train_targets: np.ndarray,
    test_targets: np.ndarray,
    expected_classes: int,
    notes: dict,
    names_usable: bool = True,
    stacklevel: int = 3,
) -> Benchmark:
    """Apply cfg.class_names_file / cfg.templates_file, warn about unusable or duplicate names and an
    unexpected class count, and build the Benchmark. `class_keys` are the data set's own class keys
    (wnids, folder names), which a class-names file may use instead of indices. The warnings point
    `stacklevel` frames up (3: the caller of the benchmark's builder)."""
    from .class_files import load_class_names, load_templates

    n = len(class_names)
    names = list(class_names)
    if cfg.class_names_file is not None:
        names = load_class_names(cfg.class_names_file, n, keys=class_keys)
        notes["names_source"] = f"{cfg.class_names_file} (--class-names)"
    elif not names_usable:
        warnings.warn(
            f"{name}: the data at {notes.get('root')} carries no usable class names (only ids such as "
            f"{names[0]!r}); zero-shot CLIP on ids is meaningless. Pass --class-names FILE "
            "(lines `id name`, or one name per line in class-index order).",
            DataWarning,
            stacklevel=stacklevel,
        )
    dups = sorted({x for x in names if names.count(x) > 1}) if len(set(names)) != n else []
    if dups:
        shown = ", ".join(repr(d) for d in dups[:8]) + (" ..." if len(dups) > 8 else "")
        warnings.warn(
            f"{name}: {len(dups)} class names are shared by several classes ({shown}); CLIP cannot "
            "tell those classes apart by text. Pass --class-names FILE with distinct names.",
            DataWarning,
            stacklevel=stacklevel,
        )
    if n > expected_classes:
        raise DataError(
            f"{name}: found {n} classes at {notes.get('root')}, but the benchmark has {expected_classes}: this "
            f"folder holds another data set (or more than {name}); check --bench and --data-root"
        )
    if n != expected_classes:
        warnings.warn(
            f"{name}: found {n} classes at {notes.get('root')}, the benchmark has {expected_classes}; "
            "the default task split assumes the full data set",
            DataWarning,
            stacklevel=stacklevel,
        )
    if cfg.templates_file is not None:
        temps = load_templates(cfg.templates_file)
        notes["templates_source"] = f"{cfg.templates_file} (--templates)"
    else:
        temps = list(templates)
    notes.setdefault("n_train", int(len(train_targets)))
    notes.setdefault("n_test", int(len(test_targets)))
    return Benchmark(
        name=name,
        class_names=names,
        templates=temps,
        train=train,
        test=test,
        train_targets=np.asarray(train_targets, dtype=np.int64),
        test_targets=np.asarray(test_targets, dtype=np.int64),
        notes=notes,
    )


def make_file_benchmark(
    name: str,
    cfg: DataConfig,
    files: FileSplit,
    *,
    class_names: list[str],
    class_keys: list[str] | None,
    templates: Sequence[str],
    expected_classes: int,
    notes: dict,
    names_usable: bool = True,
) -> Benchmark:
    """`make_benchmark` for a data set read from image files: the train and test ImageFileDatasets use
    cfg's image size and strictness, and point at `segpcl data check` for this benchmark's unreadable files."""
    hint = check_hint(name, cfg.data_root)
    return make_benchmark(
        name,
        cfg,
        class_names=class_names,
        class_keys=class_keys,
        templates=templates,
        train=ImageFileDataset(
            files.train_paths, files.train_labels, cfg.image_size, cfg.strict, hint, max_pixels=cfg.max_pixels
        ),
        test=ImageFileDataset(
            files.test_paths, files.test_labels, cfg.image_size, cfg.strict, hint, max_pixels=cfg.max_pixels
        ),
        train_targets=files.train_labels,
        test_targets=files.test_labels,
        expected_classes=expected_classes,
        notes=notes,
        names_usable=names_usable,
        stacklevel=4,
    )
