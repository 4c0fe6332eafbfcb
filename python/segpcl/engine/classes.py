"""<run>/classes.json: the class names in stream order, the prompt templates and the task sizes; what inference
needs of a stream, so that opening a run to predict or export never reads its data set.

Every checkpoint records the file's size and sha256 (engine/checkpoint.py RUN_FILES); opening a run checks it
against the record of the checkpoint it opens, bounds its size and checks its contents (templates included)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..benchmarks.base import TaskStream
from ..benchmarks.class_files import check_templates
from ..errors import ConfigError
from .checkpoint import matches_record, run_file_record, write_json

log = logging.getLogger("segpcl")

CLASSES = "classes.json"
MAX_BYTES = 64 << 20
MAX_CLASSES = 1_000_000


def write_classes(root: Path, stream: TaskStream) -> None:
    """<run>/classes.json: the class names in stream order, the prompt templates and the task sizes."""
    write_json(
        Path(root) / CLASSES,
        {
            "class_names": stream.class_names,
            "templates": list(stream.bench.templates),
            "task_sizes": stream.task_sizes,
        },
    )


class _Names:
    def __init__(self, templates: list[str]):
        self.templates = templates


class NamesOnlyStream:
    """What inference needs of a TaskStream (names, templates, task sizes), read from <run>/classes.json when
    the data set is not at hand; it has no images."""

    has_data = False

    def __init__(self, class_names: list[str], templates: list[str], task_sizes: list[int]):
        self.class_names = list(class_names)
        self.bench = _Names(list(templates))
        self.task_sizes = [int(n) for n in task_sizes]

    @property
    def n_tasks(self) -> int:
        return len(self.task_sizes)

    def task_range(self, t: int) -> range:
        start = sum(self.task_sizes[:t])
        return range(start, start + self.task_sizes[t])


def read_classes(root: Path, checkpoint: Path) -> NamesOnlyStream | None:
    """The run's classes.json, checked against the record of `checkpoint` (a task folder); None if the run has
    none. A file that is too large, changed since it was recorded or malformed is a one-line ConfigError."""
    path = Path(root) / CLASSES
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(
            f"{path} has {size / 2**20:.0f} MB; segpcl reads at most {MAX_BYTES >> 20} MB ({MAX_CLASSES:,} "
            "class names) from a run: it was not written by segpcl, restore the run's own"
        )
    record = run_file_record(checkpoint, CLASSES)
    if record is None:
        log.warning(
            "%s is not recorded in %s (written by an older segpcl); its names are used unverified", path, checkpoint
        )
    elif not matches_record(path, record):
        raise ConfigError(
            f"{path} does not match the size and sha256 recorded in {checkpoint} (changed after the run wrote it); "
            "restore the run's own classes.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names, templates, sizes = data["class_names"], data["templates"], data["task_sizes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {exc}); restore the run's own") from None
    if not isinstance(names, list) or not 0 < len(names) <= MAX_CLASSES or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: class_names must be a list of 1 to {MAX_CLASSES:,} strings; restore the run's own")
    ok_sizes = isinstance(sizes, list) and all(isinstance(n, int) and n > 0 for n in sizes)
    if not ok_sizes or sum(sizes) != len(names):
        raise ConfigError(f"{path}: task_sizes must be positive counts adding up to its {len(names)} class names")
    return NamesOnlyStream(names, check_templates(templates, str(path)), sizes)
