"""`ContinualCLIP`: what a run learned, after one of its tasks, as one object (`segpcl.load_run`).

It holds the run's CLIP with its LoRA adapter, the class prototypes, the class names and templates and the
method settings, reassembled by the same code the trainer uses (engine/reopen.py), so `predict` equals the
run's own evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .reopen import Reopened, evaluate_task, reopen, set_branch

log = logging.getLogger("segpcl")


class ContinualCLIP:
    """A continually trained CLIP of a segpcl run, after task `task` (1-based; default the last).

    Images are float tensors [B, 3, H, W] in [0, 1] at `image_size` (the model normalises them itself);
    `classify` reads files and resizes them as the benchmarks do."""

    def __init__(self, reopened: Reopened):
        self._r = reopened
        self._branch = "run"  # reopen() prepared the run's own inference

    def _use(self, branch: str | None) -> None:
        branch = branch or "run"
        if branch != self._branch:
            set_branch(self._r, branch)
            self._branch = branch

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        task: int | None = None,
        device: str | None = None,
        data_root: str | Path | None = None,
    ) -> ContinualCLIP:
        return cls(reopen(run_dir, task=task, device=device, data_root=data_root, need_data=False))

    # -- what it is --------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self._r.root

    @property
    def task(self) -> int:
        """The task (1-based) after which this model was saved."""
        return self._r.task + 1

    @property
    def config(self):
        """The run's resolved RunConfig."""
        return self._r.cfg

    @property
    def class_names(self) -> list[str]:
        """Names of the classes seen up to `task`, in the order of `predict`'s columns."""
        return list(self._r.stream.class_names[: self._r.learner.n_seen(self._r.task)])

    @property
    def templates(self) -> list[str]:
        return list(self._r.stream.bench.templates)

    @property
    def image_size(self) -> int:
        return self._r.model.image_size

    @property
    def model(self):
        """The underlying ClipModel (open_clip CLIP with the LoRA adapter applied)."""
        return self._r.model

    @property
    def learner(self):
        return self._r.learner

    @property
    def device(self) -> torch.device:
        return self._r.device

    # -- inference ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, branch: str | None = None, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities [B, len(class_names)] by the run's own inference (branch None or "run"), the
        CLIP path alone ("clip") or the dual path ("dual")."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"predict takes images [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        self._use(branch)
        out = [
            self._r.learner.predict(images[i : i + batch_size].to(self.device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, len(self.class_names))

    def load_images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Image files (or folders of them) as a tensor [N, 3, S, S] in [0, 1], resized as the benchmarks do;
        unreadable files inside folders are skipped with a warning (see `read_images`)."""
        _, images, skipped = read_images(paths, self.image_size)
        for line in skipped:
            log.warning("skipped %s", line)
        return images

    def classify(
        self, paths: Sequence[str | Path], top_k: int = 5, branch: str | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each image file (folders are expanded, sorted; unreadable files in them skipped with a warning),
        the top_k (class name, probability) pairs."""
        return self.top_classes(self.load_images(paths), top_k, branch)

    def top_classes(
        self, images: torch.Tensor, top_k: int = 5, branch: str | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each image [3, H, W] in [0, 1], the top_k (class name, probability) pairs."""
        probs = self.predict(images, branch=branch)
        k = max(1, min(top_k, probs.shape[1]))
        values, idx = probs.topk(k, dim=1)
        names = self.class_names
        return [
            [(names[j], float(v)) for v, j in zip(vs.tolist(), js.tolist(), strict=True)]
            for vs, js in zip(values, idx, strict=True)
        ]

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, embed_dim] of the adapted model."""
        with self._r.learner.autocast():
            return self._r.model.image_features(images.to(self.device)).float().cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, embed_dim] of the adapted model."""
        tokens = self._r.model.tokenize(list(texts)).to(self.device)
        with self._r.learner.autocast():
            return self._r.model.text_features(tokens).float().cpu()

    def evaluate(self, progress: bool = False) -> dict:
        """Accuracy on the test images of all classes seen up to `task`, as the trainer measured it."""
        self._use("run")
        return evaluate_task(self._r, progress)


def expand_image_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders replaced by the image files under them (sorted)."""
    from ..benchmarks._files import is_image_file

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f.name))
            if not found:
                raise ConfigError(f"{p} holds no image files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"{p} does not exist; pass image files or folders of images")
    return out


def read_images(paths: Sequence[str | Path], image_size: int) -> tuple[list[Path], torch.Tensor, list[str]]:
    """The images of `paths` as [N, 3, S, S] in [0, 1], the N files they came from, and one line per file
    skipped. A file given by name that is not a readable image is a DataError; one found inside a folder is
    skipped (a folder of photos may hold a stray file)."""
    from ..benchmarks._files import load_rgb, make_transform

    transform = make_transform(image_size)
    files: list[Path] = []
    images: list[torch.Tensor] = []
    skipped: list[str] = []
    for given in map(Path, paths):
        for file in expand_image_paths([given]):
            try:
                images.append(transform(load_rgb(file, draft_size=image_size)))
            except Exception as exc:  # PIL raises many types on a foreign or damaged file
                text = str(exc).strip()
                why = f"{type(exc).__name__}: {text.splitlines()[0] if text else 'unreadable'}"
                if file == given:
                    raise DataError(f"{file} is not an image segpcl can read ({why}); pass image files") from None
                skipped.append(f"{file} ({why})")
                continue
            files.append(file)
    if not images:
        raise DataError(f"no readable image among {', '.join(map(str, paths))} ({len(skipped)} files skipped)")
    return files, torch.stack(images), skipped


def load_run(
    run_dir: str | Path, task: int | None = None, device: str | None = None, data_root: str | Path | None = None
) -> ContinualCLIP:
    """The model of a run directory after task `task` (1-based; default the last completed task). Without the
    run's data set at hand (or at `data_root`) the class names come from the run's classes.json; `evaluate`
    needs the data."""
    return ContinualCLIP.from_run(run_dir, task=task, device=device, data_root=data_root)
