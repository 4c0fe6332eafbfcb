"""The learner: one class with switches for every method of the paper's table (DESIGN §4).

before_task builds the teacher, anchors (DPGD) and the TSGR subgraph; training_loss is
CE + lambda_A ACGD + lambda_T TSGR; after_task migrates old prototypes by the anchor drift and adds
new-class prototypes; predict is the dual-path (or CLIP-only) prediction over the seen classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import MethodSection
from ..errors import ConfigError
from ..models.clip import ClipModel
from ..models.lora import frozen_teacher
from ..models.text import class_prompts, class_text_embeddings
from .acgd import acgd_loss
from .anchors import AnchorSet, batched_features, build_anchors
from .prototypes import PrototypeMemory, dual_path_probs
from .tsgr import TextGeometryRegularizer


@dataclass(frozen=True)
class Switches:
    """Which parts of SeGP-CL a method uses."""

    train: bool = True
    acgd: bool = False
    tsgr: bool = False
    prototypes: bool = False
    """Prototype migration and dual-path inference."""
    text_only_pgd: bool = False
    distill_new: bool = False
    """KL over old classes on the new-task images instead of anchors (the paper's Fig. 2b comparison)."""


METHODS: dict[str, Switches] = {
    "zeroshot": Switches(train=False),
    "lora": Switches(),
    "lora+acgd": Switches(acgd=True),
    "lora+acgd+tsgr": Switches(acgd=True, tsgr=True),
    "segpcl": Switches(acgd=True, tsgr=True, prototypes=True),
    "segpcl-textpgd": Switches(acgd=True, tsgr=True, prototypes=True, text_only_pgd=True),
    "lora+distill-new": Switches(distill_new=True),
}


def method_switches(name: str) -> Switches:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class Learner:
    """Owns the method; the engine owns loops, devices, data loaders and checkpoints."""

    def __init__(
        self,
        model: ClipModel,
        class_names: list[str],
        templates: list[str],
        task_sizes: list[int],
        cfg: MethodSection,
        text_has_lora: bool,
        device: torch.device | str = "cpu",
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.model = model
        self.cfg = cfg
        self.switches = method_switches(cfg.name)
        self.task_sizes = task_sizes
        self.device = torch.device(device)
        self.autocast = autocast
        self.text_has_lora = text_has_lora
        self.n_templates = len(templates)
        self.tokens = model.tokenize(class_prompts(class_names, templates)).to(self.device)
        self.teacher: ClipModel | None = None
        self.teacher_text: torch.Tensor | None = None
        self.anchors: AnchorSet | None = None
        self.tsgr: TextGeometryRegularizer | None = None
        self.prototypes = PrototypeMemory(model.embed_dim)
        self.task = -1
        self._frozen_text: torch.Tensor | None = None
        self._eval_text: torch.Tensor | None = None
        self._eval_protos: torch.Tensor | None = None
        self._anchor_gen = torch.Generator()

    # -- bookkeeping ---------------------------------------------------------------------------------
    def n_seen(self, t: int | None = None) -> int:
        t = self.task if t is None else t
        return sum(self.task_sizes[: t + 1])

    def n_old(self) -> int:
        return self.n_seen(self.task - 1) if self.task > 0 else 0

    @property
    def uses_prototypes(self) -> bool:
        """Prototypes are kept for dual-path inference and as DPGD's visual targets."""
        return self.switches.prototypes or (self.switches.acgd and not self.switches.text_only_pgd)

    def _text(self, model: ClipModel, n_classes: int) -> torch.Tensor:
        return class_text_embeddings(model, self.tokens[: n_classes * self.n_templates], self.n_templates)

    def student_text(self, n_classes: int) -> torch.Tensor:
        """Student class embeddings; computed once and cached while the text tower has no LoRA."""
        if self.text_has_lora and self.switches.train:
            return self._text(self.model, n_classes)
        if self._frozen_text is None or len(self._frozen_text) < n_classes:
            with torch.no_grad():
                self._frozen_text = self._text(self.model, len(self.tokens) // self.n_templates)
        return self._frozen_text[:n_classes]

    # -- task hooks ----------------------------------------------------------------------------------
    def before_task(self, t: int, train_batches: Callable[[], Batches]) -> dict:
        """Prepare task t. train_batches() iterates the task's training set unshuffled, (images, labels) on
        the device; it is only called when anchors are needed. Returns information for the log."""
        self.task = t
        self.anchors, self.tsgr, self.teacher = None, None, None
        self._anchor_gen.manual_seed(torch.initial_seed() + 1000)  # the engine seeded (seed, task) just before
        info: dict = {}
        if t == 0 or not self.switches.train:
            return info
        needs_teacher = self.switches.acgd or self.switches.tsgr or self.switches.distill_new
        if not needs_teacher:
            return info
        self.teacher = frozen_teacher(self.model)
        with torch.no_grad():
            self.teacher_text = self._text(self.teacher, self.n_seen(t))
        n_old = self.n_old()
        if self.switches.acgd:
            use_protos = not self.switches.text_only_pgd and len(self.prototypes) > 0
            protos = self.prototypes.matrix(n_old, self.teacher_text) if use_protos else None
            self.anchors = build_anchors(
                self.teacher.image_features,
                (images for images, _ in train_batches()),
                self.teacher_text[:n_old],
                protos,
                float(self.teacher.logit_scale()),
                k_seed=self.cfg.k_seed,
                steps=self.cfg.pgd_steps,
                eps=self.cfg.pgd_eps,
                gamma=self.cfg.pgd_gamma,
                lambda_p=0.0 if self.switches.text_only_pgd else self.cfg.lambda_p,
                early_stop_margin=self.cfg.early_stop_margin,
                autocast=self.autocast,
            )
            info["anchors"] = len(self.anchors)
        if self.switches.tsgr and self.text_has_lora:
            self.tsgr = TextGeometryRegularizer(self.teacher_text, self.cfg.tsgr_k, self.cfg.tsgr_threshold)
            info["tsgr_edges"] = self.tsgr.n_edges
        return info

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """CE over all seen classes + lambda_A * ACGD + lambda_T * TSGR for one batch of new-task images."""
        n_seen, n_old = self.n_seen(), self.n_old()
        with self.autocast():  # the text tower runs every step when it has LoRA: bf16 on CUDA like the images
            text = self.student_text(n_seen)
        anchor_idx = None
        x = images
        if self.anchors is not None and self.cfg.lambda_acgd > 0 and len(self.anchors):
            k = min(self.cfg.anchors_per_step, len(self.anchors))
            anchor_idx = torch.randperm(len(self.anchors), generator=self._anchor_gen)[:k].to(self.device)
            x = torch.cat([images, self.anchors.images[anchor_idx]])
        with self.autocast():
            feats = self.model.image_features(x)
        scale = self.model.logit_scale()
        batch_feats = feats[: len(images)]
        ce = F.cross_entropy(scale * batch_feats @ text.T, labels)
        parts = {"ce": ce.detach()}
        loss = ce
        if anchor_idx is not None:
            student_logits = scale * feats[len(images) :] @ text[:n_old].T
            kl = acgd_loss(student_logits, self.anchors.teacher_logits[anchor_idx], self.cfg.tau)
            loss = loss + self.cfg.lambda_acgd * kl
            parts["acgd"] = kl.detach()
        if self.switches.distill_new and self.teacher is not None and n_old > 0:
            with torch.no_grad(), self.autocast():
                t_feats = self.teacher.image_features(images)
            teacher_logits = self.teacher.logit_scale() * t_feats @ self.teacher_text[:n_old].T
            kl = acgd_loss(scale * batch_feats @ text[:n_old].T, teacher_logits, self.cfg.tau)
            loss = loss + self.cfg.lambda_acgd * kl
            parts["distill_new"] = kl.detach()
        if self.tsgr is not None and self.cfg.lambda_tsgr > 0:
            reg = self.tsgr.loss(text)
            loss = loss + self.cfg.lambda_tsgr * reg
            parts["tsgr"] = reg.detach()
        return loss, parts

    @torch.no_grad()
    def after_task(self, t: int, train_batches: Callable[[], Batches]) -> dict:
        """Migrate old prototypes by the anchor drift, then add the new classes' prototypes."""
        self.teacher = None
        info: dict = {}
        if not self.uses_prototypes:
            return info
        n_old = self.n_old()
        if self.switches.prototypes and self.cfg.migrate != "none" and self.anchors is not None and n_old:
            after = self._features(self.anchors.images)
            shifts = self.prototypes.migrate(
                self.anchors.teacher_features,
                after,
                classes=list(range(n_old)),
                mode=self.cfg.migrate,
                sigma=self.cfg.sigma,
                anchor_targets=self.anchors.targets,
            )
            info["mean_prototype_shift"] = float(shifts.norm(dim=1).mean())
        for images, labels in train_batches():
            self.prototypes.add(self._features(images), labels)
        return info

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return batched_features(self.model.image_features, images, autocast=self.autocast)

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def begin_eval(self, t: int) -> None:
        """Cache what prediction needs after task t: text embeddings and normalised prototypes."""
        n = self.n_seen(t)
        self._eval_text = self.student_text(n)  # cached across tasks while the text tower is frozen
        use_protos = self.switches.prototypes and self.cfg.beta > 0 and len(self.prototypes) > 0
        self._eval_protos = self.prototypes.matrix(n, self._eval_text) if use_protos else None

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, n_seen] (call begin_eval first)."""
        with self.autocast():
            feats = self.model.image_features(images).float()
        scale = float(self.model.logit_scale())
        proto_scale = self.cfg.proto_scale if self.cfg.proto_scale is not None else scale
        return dual_path_probs(feats, self._eval_text, self._eval_protos, scale, proto_scale, self.cfg.beta)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"task": self.task, "prototypes": self.prototypes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.task = int(state["task"])
        self.prototypes.load_state_dict(state["prototypes"])
