"""segpcl: exemplar-free continual learning of CLIP models with SeGP-CL.

The public API (everything else is private or reached through submodules)::

    import segpcl

    result = segpcl.train({"model": {"arch": "tiny"}})       # or a RunConfig; -> RunResult(run_dir, metrics)
    clip = segpcl.load_run(result.run_dir)                    # ContinualCLIP after the last task
    probs = clip.predict(images)                              # [B, 3, H, W] in [0, 1] -> [B, n_seen]
    clip.classify(["cat.jpg"], top_k=5)                       # [[(class name, probability), ...]]

Names are imported on first use, so `import segpcl` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # running and reopening
    "train": "segpcl.engine.api",
    "RunConfig": "segpcl.config",
    "resolve_config": "segpcl.config",
    "RunResult": "segpcl.engine.run",
    "load_run": "segpcl.inference.continual",
    "ContinualCLIP": "segpcl.inference.continual",
    "export_run": "segpcl.inference.export",
    # models and data
    "load_clip": "segpcl.models.loading",
    "ClipModel": "segpcl.models.clip",
    "list_benchmarks": "segpcl.benchmarks.base",
    "build_benchmark": "segpcl.benchmarks.base",
    "DataConfig": "segpcl.benchmarks.base",
    "TaskStream": "segpcl.benchmarks.base",
    # methods: the interface, the registry, SeGP-CL's learner and its parts
    "ContinualMethod": "segpcl.method.base",
    "register_method": "segpcl.method.registry",
    "Learner": "segpcl.method.learner",
    "METHODS": "segpcl.method.learner",
    "build_anchors": "segpcl.method.anchors",
    "acgd_loss": "segpcl.method.acgd",
    "RootedGeometryRegularizer": "segpcl.method.tsgr",
    "TextGeometryRegularizer": "segpcl.method.tsgr",
    "select_key_edges": "segpcl.method.tsgr",
    "select_neighbors": "segpcl.method.tsgr",
    "PrototypeMemory": "segpcl.method.prototypes",
    "dual_path_probs": "segpcl.method.prototypes",
    "AccuracyMatrix": "segpcl.metrics",
    # errors
    "SegpclError": "segpcl.errors",
    "ConfigError": "segpcl.errors",
    "DataError": "segpcl.errors",
    "WeightsError": "segpcl.errors",
    "TrainingError": "segpcl.errors",
}

__all__ = [
    "__version__",
    "train",
    "RunConfig",
    "resolve_config",
    "RunResult",
    "load_run",
    "ContinualCLIP",
    "export_run",
    "load_clip",
    "ClipModel",
    "list_benchmarks",
    "build_benchmark",
    "DataConfig",
    "TaskStream",
    "ContinualMethod",
    "register_method",
    "Learner",
    "METHODS",
    "build_anchors",
    "acgd_loss",
    "RootedGeometryRegularizer",
    "TextGeometryRegularizer",
    "select_key_edges",
    "select_neighbors",
    "PrototypeMemory",
    "dual_path_probs",
    "AccuracyMatrix",
    "SegpclError",
    "ConfigError",
    "DataError",
    "WeightsError",
    "TrainingError",
]

if TYPE_CHECKING:
    from .benchmarks.base import DataConfig, TaskStream, build_benchmark, list_benchmarks
    from .config import RunConfig, resolve_config
    from .engine.api import train
    from .engine.run import RunResult
    from .errors import ConfigError, DataError, SegpclError, TrainingError, WeightsError
    from .inference.continual import ContinualCLIP, load_run
    from .inference.export import export_run
    from .method.acgd import acgd_loss
    from .method.anchors import build_anchors
    from .method.base import ContinualMethod
    from .method.learner import METHODS, Learner
    from .method.prototypes import PrototypeMemory, dual_path_probs
    from .method.registry import register_method
    from .method.tsgr import RootedGeometryRegularizer, TextGeometryRegularizer, select_key_edges, select_neighbors
    from .metrics import AccuracyMatrix
    from .models.clip import ClipModel
    from .models.loading import load_clip


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segpcl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
