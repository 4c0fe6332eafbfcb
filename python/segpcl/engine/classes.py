"""<run>/classes.json: the class names in stream order, the prompt templates and the task sizes; what inference
needs of a stream when the data set is not at hand."""

from __future__ import annotations

import json
from pathlib import Path

from ..benchmarks.base import TaskStream
from .checkpoint import write_json

CLASSES = "classes.json"


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


def names_only(root: Path) -> NamesOnlyStream | None:
    try:
        data = json.loads((root / CLASSES).read_text())
        return NamesOnlyStream(data["class_names"], data["templates"], data["task_sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
