"""OmniBenchmark, the processed 300-class split used by the LAMDA code (ADAM/EASE/ENGINE...): a pre-split
ImageFolder `{train,test}/<class folder>/` (10 tasks of 30). Names are cleaned from the folder names
(numeric prefix dropped, underscores to spaces); duplicate names after cleaning are warned about.

Releases whose class folders are bare ids (`0/`, `1/`, ... `299/`) carry no class names, and no id -> name table
for them is published: the split's author says the ids have no known names (LAMDA-CL/RevisitingCIL issue #7,
"the class labels in the source dataset are named with numerical numbers ... I also do not know the class names
for them"), and the source release's `trainid2name_v2.json` (ZhangYuanhan-AI/OmniBenchmark) numbers classes
within each of its 21 realms, which the split's folder ids do not name. So such a folder needs --class-names FILE
(`id name` lines, the id being the folder name) and is an error without it: CLIP must never be prompted with
"a photo of a 10."."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ._files import FileSplit, Locator, make_file_benchmark, register_locator
from .base import Benchmark, DataConfig, register_benchmark
from .imagefolder import clean_class_name, is_split_imagefolder, read_split_imagefolder
from .templates import OMNIBENCHMARK_TEMPLATES

N_CLASSES = 300
FOLDER = "omnibenchmark"
SPLIT = "pre-split ImageFolder"


def _detect(folder: Path) -> str | None:
    return SPLIT if folder.is_dir() and is_split_imagefolder(folder) else None


LOCATOR = register_locator(
    Locator(
        bench="omnibenchmark",
        aliases=(FOLDER, "omnibench", "OmniBenchmark", "omni"),
        detect=_detect,
        expected=f"the processed 300-class {FOLDER}/ folder as a pre-split ImageFolder "
        "{train,test}/<class folder>/<images>",
    )
)


@register_benchmark(
    "omnibenchmark",
    n_classes=N_CLASSES,
    initial=30,
    increment=30,
    description="OmniBenchmark (LAMDA 300-class split), 10 tasks of 30 ({train,test}/<class>/)",
    is_present=LOCATOR.is_present,
)
def build_omnibenchmark(cfg: DataConfig) -> Benchmark:
    folder, layout = LOCATOR.require(cfg)
    s = read_split_imagefolder(folder)
    names = [clean_class_name(k) for k in s.classes]
    bare = [k for k, n in zip(s.classes, names, strict=True) if n.strip().isdigit()]
    if bare and cfg.class_names_file is None:
        raise DataError(
            f"omnibenchmark: {len(bare)} of the {len(names)} class folders under {s.train_dir} are bare ids "
            f"(e.g. {bare[0]!r}), which would prompt CLIP with 'a photo of a {bare[0]}.'; pass --class-names FILE "
            "with one `id name` line per class folder (e.g. `10 sea anemone`); no id -> name list of this split is "
            "published (LAMDA-CL/RevisitingCIL issue #7)"
        )
    return make_file_benchmark(
        "omnibenchmark",
        cfg,
        FileSplit(s.train_paths, s.train_labels, s.test_paths, s.test_labels),
        class_names=names,
        class_keys=s.classes,
        templates=OMNIBENCHMARK_TEMPLATES,
        expected_classes=N_CLASSES,
        notes={
            "layout": layout,
            "root": str(folder),
            "names_source": f"class folder names under {s.train_dir}",
        },
    )
