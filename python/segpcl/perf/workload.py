"""The workload `segpcl bench overhead` times: one model with LoRA, a learner of each method on it, set up as
task t = 2 of a stream, with synthetic images, class names and templates (perf/overhead.py measures it)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..config import LoraSection, MethodSection
from .config import OverheadConfig
from .timing import Timer

if TYPE_CHECKING:
    from ..method.learner import Learner


@dataclass
class Workload:
    """What every measurement shares: one model with LoRA, a learner of each method (`lora`, `segpcl`) on it,
    set up as task t = 2 with prototypes of every class and its anchors built once (untimed), the synthetic
    images, the optimizer and the timer."""

    cfg: OverheadConfig
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]
    model: torch.nn.Module
    lora_cfg: LoraSection
    setup_s: float
    lora: Learner
    seg: Learner
    A: int
    k_seed: int
    pgd_steps: int
    task_steps: int
    pool: torch.Tensor
    pool_labels: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    eval_images: torch.Tensor
    timer: Timer
    teacher: torch.nn.Module | None = None
    n_anchors: int = 0
    n_edges: int = 0
    params: list | None = None
    opt: torch.optim.Optimizer | None = None
    optimizer_step: Callable | None = None
    """The trainer's update (engine.trainer.optimizer_step), imported once, outside the timed steps."""
    losses_finite: bool = True

    @property
    def n_old(self) -> int:
        return self.cfg.classes - self.cfg.increment

    @property
    def a_eff(self) -> int:
        """The anchors per step the learner uses: min(A, K)."""
        return min(self.A, self.n_anchors)

    @property
    def text_lora(self) -> bool:
        return "text" in self.lora_cfg.towers

    @classmethod
    def build(cls, cfg: OverheadConfig) -> Workload:
        from ..config import RunConfig
        from ..engine.device import autocast_factory, resolve_device
        from ..engine.trainer import make_optimizer, optimizer_step
        from ..models.lora import lora_parameters

        defaults = MethodSection()
        A = cfg.anchors_per_step if cfg.anchors_per_step is not None else defaults.anchors_per_step
        k_seed = cfg.k_seed if cfg.k_seed is not None else defaults.k_seed
        pgd_steps = cfg.pgd_steps if cfg.pgd_steps is not None else defaults.pgd_steps
        steps_per_task = cfg.epochs * math.ceil(cfg.images_per_task / cfg.batch_size)
        device = resolve_device(cfg.device)
        autocast = autocast_factory(device, cfg.precision)
        torch.manual_seed(cfg.seed)
        model, lora_cfg, setup_s = _load_model(cfg, device)
        lora, seg = _make_learners(cfg, model, lora_cfg, A, k_seed, pgd_steps, device, autocast)
        b = cls(
            cfg, device, autocast, model, lora_cfg, setup_s, lora, seg, A, k_seed, pgd_steps,
            cfg.task_steps if cfg.task_steps is not None else steps_per_task,
            *_synthetic_data(cfg, seg, model.image_size, device), timer=Timer(device),
        )  # fmt: skip
        # anchors once, untimed (warm-up); the anchors stay cached for the training steps
        for lrn in (lora, seg):
            lrn.before_task(1, b.task_batches)
        b.n_anchors, b.teacher = len(seg.anchors), seg.teacher
        b.n_edges = seg.tsgr.n_edges if seg.tsgr is not None else 0
        b.params = lora_parameters(model)
        b.opt = make_optimizer(b.params, RunConfig())  # the default train section: what training uses
        b.optimizer_step = optimizer_step
        return b

    @property
    def task_batches(self) -> TaskBatches:
        """The task's training set as the method hooks read it (re-iterable)."""
        return TaskBatches(self.pool, self.pool_labels, self.cfg.images_per_task)

    # -- what is timed ---------------------------------------------------------------------------------
    def train_step(self, lrn: Learner, anchors: int | None = None) -> None:
        """The trainer's step: loss, finite check, then its optimizer_step (backward, clip, optimizer)."""
        if anchors is not None:
            lrn.cfg.anchors_per_step = anchors
        loss, _ = lrn.training_loss(self.images, self.labels)
        self.losses_finite &= math.isfinite(loss.item())  # the trainer's one host sync per step
        self.optimizer_step(loss, self.opt, self.params, 1.0)

    def image_fwd_bwd(self, n: int) -> Callable[[], None]:
        """Forward and backward of the image tower alone on n images (the batch, then anchors)."""
        B = self.cfg.batch_size
        x = torch.cat([self.images, self.seg.anchors.images[: n - B]]) if n > B else self.images

        def run() -> None:
            with self.autocast():
                feats = self.model.image_features(x)
            feats.sum().backward()
            self.opt.zero_grad(set_to_none=True)

        return run

    def text_fwd_bwd(self) -> None:
        """Forward and backward of the text tower alone over the C x templates prompts."""
        with self.autocast():  # as in Learner.training_loss
            text = self.lora.student_text(self.cfg.classes)
        text.sum().backward()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def teacher_forward(self) -> None:
        with self.autocast():
            self.teacher.image_features(self.images)


@dataclass
class TaskBatches:
    """The task's training set, synthetic, on the device: one pool of images served batch after batch,
    `images` in all; iterable any number of times (as the method hooks' `batches`)."""

    pool: torch.Tensor
    labels: torch.Tensor
    images: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        left, pool_n = self.images, len(self.pool)
        while left > 0:
            n = min(pool_n, left)
            yield self.pool[:n], self.labels[:n]
            left -= n


def _load_model(cfg: OverheadConfig, device: torch.device) -> tuple[torch.nn.Module, LoraSection, float]:
    """The model with the method's LoRA defaults (rank 32, B only) on `cfg.lora_towers`, and the seconds taken."""
    from ..models.loading import load_clip
    from ..models.lora import apply_lora

    t0 = time.perf_counter()
    model = load_clip(cfg.arch, cfg.pretrained, device=device, precision=cfg.precision, tokenizer=cfg.tokenizer)
    model.eval()
    lora_cfg = LoraSection(towers=list(cfg.lora_towers))
    apply_lora(model, lora_cfg)
    model.to(device)
    return model, lora_cfg, time.perf_counter() - t0


def _make_learners(cfg, model, lora_cfg, A, k_seed, pgd_steps, device, autocast) -> tuple[Learner, Learner]:
    """A `lora` and a `segpcl` learner on the same model, at a task of C seen classes (C - increment old), with
    synthetic class names and templates."""
    from ..method.learner import Learner

    class_names = [f"synthetic class {i}" for i in range(cfg.classes)]
    templates = [f"a photo of a {{}}, variant {j}." for j in range(cfg.templates)]
    task_sizes = [cfg.classes - cfg.increment, cfg.increment]
    learners = []
    for name in ("lora", "segpcl"):
        mcfg = MethodSection(name=name, anchors_per_step=A, k_seed=k_seed, pgd_steps=pgd_steps)
        learners.append(Learner(
            model, class_names, templates, task_sizes, mcfg, text_has_lora="text" in lora_cfg.towers,
            device=device, autocast=autocast,
        ))  # fmt: skip
    return learners[0], learners[1]


def _synthetic_data(cfg: OverheadConfig, seg: Learner, H: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Random prototypes of every class into `seg` (normally built at the end of each task: DPGD's visual
    targets and the dual path), then (pool, pool_labels, images, labels, eval_images) on the device: the task's
    training pool, one training batch and one inference batch."""
    B, C, inc = cfg.batch_size, cfg.classes, cfg.increment
    n_old = C - inc
    gen = torch.Generator().manual_seed(cfg.seed)
    d_p = seg.prototypes.bank.dim
    seg.prototypes.add(torch.randn(C, d_p, generator=gen), torch.arange(C))
    pool_n = min(cfg.eval_batch_size, cfg.images_per_task)
    pool = torch.rand(pool_n, 3, H, H, generator=gen).to(device)
    pool_labels = (n_old + torch.arange(pool_n) % inc).to(device)
    images = torch.rand(B, 3, H, H, generator=gen).to(device)
    labels = (n_old + torch.randint(0, inc, (B,), generator=gen)).to(device)
    eval_images = torch.rand(cfg.eval_batch_size, 3, H, H, generator=gen).to(device)
    return pool, pool_labels, images, labels, eval_images
