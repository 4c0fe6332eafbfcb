"""`segpcl data check` and `segpcl benches --data-root`: is a data set where segpcl looks for it, in
which layout, with how many classes and images, which files cannot be decoded, and how fast the
decode + transform pipeline runs through a DataLoader with workers."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from ._files import MAX_PIXELS, ArrayImageDataset, ImageFileDataset, get_locator, load_rgb
from .base import BenchmarkInfo, DataConfig, get_benchmark_info, list_benchmarks
from .walk import LinkWarning

MAX_LISTED = 20


@dataclass
class DataReport:
    """What `check_benchmark` found."""

    bench: str
    root: str | None
    layout: str
    n_classes: int
    expected_classes: int
    names_source: str
    class_names: list[str]
    train_images: int
    test_images: int
    train_empty_classes: list[int] = field(default_factory=list)
    """Class ids without a single training image."""
    test_empty_classes: list[int] = field(default_factory=list)
    """Class ids without a single test image."""
    decoded_images: int = 0
    """Images decoded to look for unreadable files (0 for in-memory data such as CIFAR)."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of every file that could not be decoded (or is above the pixel cap)."""
    link_loops: int = 0
    """Folder links that loop back to a folder above them (not followed)."""
    link_repeats: int = 0
    """Folders or files reached a second time through a link inside one class folder (read once)."""
    same_files: list[tuple[str, str]] = field(default_factory=list)
    """(path, earlier path) of images that are one file under two names (links) in two classes or splits."""
    warnings: list[str] = field(default_factory=list)
    images_per_s: float | None = None
    """Decode + transform throughput through a DataLoader (speed=True)."""
    workers: int | None = None
    speed_images: int | None = None
    image_size: int = 224
    train_source: str | None = None
    """Which images train, where a data set ships more than train and test (UCF101's CoOp json: train + val)."""

    @property
    def ok(self) -> bool:
        """No unreadable files, no file in two places, and every class has training and test images."""
        return (
            not self.unreadable and not self.same_files and not self.train_empty_classes and not self.test_empty_classes
        )

    def format_table(self) -> str:
        rows: list[tuple[str, str]] = [
            ("benchmark", self.bench),
            ("folder", self.root or "-"),
            ("layout", self.layout),
            ("classes", f"{self.n_classes} (benchmark: {self.expected_classes})"),
            ("class names", f"{self.names_source}; e.g. {', '.join(self.class_names[:3])}"),
            ("train images", f"{self.train_images}" + _empty(self.train_empty_classes)),
            *([("training", self.train_source)] if self.train_source else []),
            ("test images", f"{self.test_images}" + _empty(self.test_empty_classes)),
            (
                "decoded",
                f"{self.decoded_images} files" if self.decoded_images else "in-memory data (no files to decode)",
            ),
            ("unreadable", str(len(self.unreadable))),
            ("links", self._links()),
        ]
        if self.images_per_s is not None:
            rows.append(
                (
                    "throughput",
                    f"{self.images_per_s:.0f} images/s with {self.workers} DataLoader workers "
                    f"(decode + resize/crop to {self.image_size}, {self.speed_images} images)",
                )
            )
        rows.append(("status", "OK" if self.ok else "PROBLEMS (see below)"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        if self.unreadable:
            lines.append("")
            lines.append("unreadable files (skipped during training; --strict makes them an error):")
            for path, reason in self.unreadable[:MAX_LISTED]:
                lines.append(f"  {path}: {reason}")
            if len(self.unreadable) > MAX_LISTED:
                lines.append(f"  ... and {len(self.unreadable) - MAX_LISTED} more")
        if self.same_files:
            lines.append("")
            lines.append("images that are the same file as an earlier one (reached through links):")
            for path, first in self.same_files[:MAX_LISTED]:
                lines.append(f"  {path} = {first}")
            if len(self.same_files) > MAX_LISTED:
                lines.append(f"  ... and {len(self.same_files) - MAX_LISTED} more")
        if self.warnings:
            lines.append("")
            lines.append("warnings:")
            lines.extend(f"  {w}" for w in self.warnings)
        return "\n".join(lines)

    def _links(self) -> str:
        found = [
            f"{self.link_loops} folder link loops not followed" if self.link_loops else "",
            f"{self.link_repeats} folders or files reached again through links, read once" if self.link_repeats else "",
            f"{len(self.same_files)} images are the same file as another image" if self.same_files else "",
        ]
        return "; ".join(f for f in found if f) or "none"


def _link_counts(caught) -> tuple[int, int]:
    """(loops, repeats) of the folder walks' LinkWarnings."""
    found = [w.message for w in caught if isinstance(w.message, LinkWarning)]
    return sum(len(w.loops) for w in found), sum(len(w.repeats) for w in found)


def same_files(paths: list[str]) -> list[tuple[str, str]]:
    """(path, earlier path) for each path naming a file already named earlier in `paths` (a link or a hard
    link to it): the same image in two classes, or in train and test."""
    first: dict[tuple[int, int], str] = {}
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # reported as unreadable
        key = (st.st_dev, st.st_ino)
        if key in first:
            out.append((path, first[key]))
        else:
            first[key] = path
    return out


def _empty(ids: list[int]) -> str:
    if not ids:
        return ""
    return f"; {len(ids)} classes without images: {ids[:10]}{' ...' if len(ids) > 10 else ''}"


def _decode_error(path: str, max_pixels: int | None = MAX_PIXELS) -> str | None:
    try:
        load_rgb(path, max_pixels=max_pixels)
        return None
    except Exception as err:  # noqa: BLE001  (any decode failure is a finding, not a crash)
        return f"{type(err).__name__}: {err}"


def find_unreadable(
    paths: list[str],
    threads: int | None = None,
    progress: bool = True,
    desc: str = "decoding",
    max_pixels: int | None = MAX_PIXELS,
) -> list[tuple[str, str]]:
    """Decode every file fully with PIL (threads: PIL releases the GIL while decoding); a file above
    `max_pixels` is reported, not decoded."""
    from tqdm.auto import tqdm

    threads = threads or min(16, 2 * (os.cpu_count() or 1))
    bad: list[tuple[str, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results: Iterable = pool.map(partial(_decode_error, max_pixels=max_pixels), paths, chunksize=64)
            for path, err in tqdm(
                zip(paths, results, strict=True),
                total=len(paths),
                desc=desc,
                unit="img",
                disable=not progress,
            ):
                if err is not None:
                    bad.append((path, err))
    return bad


def measure_throughput(
    dataset: Dataset, workers: int | None = None, n_images: int = 2048, batch_size: int = 64
) -> tuple[float, int, int]:
    """(images/s, workers, images timed) of decode + transform through a DataLoader, timed from the
    first batch on (worker start-up excluded); images spread evenly over the data set."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    n = min(n_images, len(dataset))
    if n == 0:
        return 0.0, workers, 0
    idx = np.unique(np.linspace(0, len(dataset) - 1, n).astype(np.int64)).tolist()
    loader = DataLoader(Subset(dataset, idx), batch_size=batch_size, num_workers=workers, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        it = iter(loader)
        first = next(it)
        t0 = time.perf_counter()
        count = 0
        for _, labels in it:
            count += len(labels)
        elapsed = time.perf_counter() - t0
        if count == 0:  # a single batch: time it with the start-up
            count, elapsed = len(first[1]), time.perf_counter() - start
    return count / max(elapsed, 1e-9), workers, count


def _empty_classes(targets: np.ndarray, n: int) -> list[int]:
    present = np.zeros(n, dtype=bool)
    t = np.asarray(targets, dtype=np.int64)
    present[t[(t >= 0) & (t < n)]] = True
    return np.nonzero(~present)[0].tolist()


def check_benchmark(
    name: str,
    cfg: DataConfig,
    speed: bool = False,
    *,
    workers: int | None = None,
    speed_images: int = 2048,
    progress: bool = True,
    decode_threads: int | None = None,
) -> DataReport:
    """Build the benchmark (a wrong layout raises DataError saying what was expected where), count
    classes and images per split, decode every image file, and with `speed` time the loading pipeline."""
    info = get_benchmark_info(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bench = info.builder(cfg)
    notes = bench.notes or {}
    n = bench.n_classes
    report = DataReport(
        bench=name,
        root=notes.get("root", str(cfg.data_root) if cfg.data_root else None),
        layout=notes.get("layout", "built in" if not info.needs_data else "?"),
        n_classes=n,
        expected_classes=info.n_classes or n,  # a data-defined benchmark (folder): what it found
        names_source=notes.get("names_source", "built in"),
        class_names=list(bench.class_names),
        train_images=len(bench.train_targets),
        test_images=len(bench.test_targets),
        train_empty_classes=_empty_classes(bench.train_targets, n),
        test_empty_classes=_empty_classes(bench.test_targets, n),
        warnings=_unique(str(w.message) for w in caught),
        image_size=cfg.image_size,
        train_source=notes.get("train_source"),
    )
    if notes.get("split_file"):
        report.layout += f" (split: {notes['split_file']})"
    report.link_loops, report.link_repeats = _link_counts(caught)
    every_path: list[str] = []
    for split, ds in (("train", bench.train), ("test", bench.test)):
        if isinstance(ds, ImageFileDataset):
            paths = ds.all_paths()
            every_path += paths
            report.decoded_images += len(paths)
            report.unreadable += find_unreadable(
                paths, decode_threads, progress, desc=f"decoding {split}", max_pixels=ds.max_pixels
            )
    report.same_files = same_files(every_path)
    if speed:
        report.images_per_s, report.workers, report.speed_images = measure_throughput(
            bench.train, workers, speed_images
        )
    return report


def check_folder(
    path: str | Path,
    image_size: int = 224,
    speed: bool = False,
    *,
    workers: int | None = None,
    speed_images: int = 2048,
    progress: bool = True,
) -> DataReport:
    """The same check for an ImageFolder (a `--zs-eval` set): `path/<class>/*.jpg`."""
    from .imagefolder import load_imagefolder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, names = load_imagefolder(path, image_size)
    report = DataReport(
        bench=f"folder {path}",
        root=str(path),
        layout="ImageFolder <class>/<images>",
        n_classes=len(names),
        expected_classes=len(names),
        names_source="class folder names",
        class_names=names,
        train_images=0,
        test_images=len(ds),
        test_empty_classes=_empty_classes(ds.labels, len(names)),
        warnings=_unique(str(w.message) for w in caught),
        image_size=image_size,
    )
    paths = ds.all_paths()
    report.decoded_images = len(paths)
    report.unreadable = find_unreadable(paths, progress=progress)
    report.link_loops, report.link_repeats = _link_counts(caught)
    report.same_files = same_files(paths)
    if speed:
        report.images_per_s, report.workers, report.speed_images = measure_throughput(ds, workers, speed_images)
    return report


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def benchmark_status(data_root: str | Path | None) -> list[tuple[BenchmarkInfo, bool, str]]:
    """For `segpcl benches --data-root DIR`: each benchmark, whether its data is found under DIR (the
    folder itself or a conventional subfolder), and where / in which layout, or what was expected."""
    out: list[tuple[BenchmarkInfo, bool, str]] = []
    root = Path(data_root).expanduser() if data_root is not None else None
    for info in list_benchmarks():
        if not info.needs_data:
            out.append((info, True, "built in; needs no data"))
            continue
        loc = get_locator(info.name)
        if root is None:
            out.append((info, False, "give --data-root DIR to look for it"))
            continue
        if not root.exists():
            out.append((info, False, f"{root} does not exist"))
            continue
        if loc is None:
            present = bool(info.is_present(root))
            out.append((info, present, "found" if present else f"not found under {root}"))
            continue
        try:
            found = loc.find(root)
        except OSError as err:
            found = None
            out.append((info, False, f"cannot read {root}: {err}"))
            continue
        if found is None:
            out.append((info, False, f"not found under {root} (looked for {root}/{loc.aliases[0]}/ and others)"))
        else:
            out.append((info, True, f"{found[1]} at {found[0]}"))
    return out


__all__ = [
    "ArrayImageDataset",
    "DataReport",
    "benchmark_status",
    "check_benchmark",
    "check_folder",
    "find_unreadable",
    "measure_throughput",
]
