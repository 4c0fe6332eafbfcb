"""The learner: one class with switches for every row of the paper's tables (DESIGN §4).

before_task builds the teacher, the distillation source (DPGD anchors, seeds, or reference images) and the TSGR
regulariser; training_loss is CE + lambda_A ACGD + lambda_T TSGR; after_task transfers the old prototypes by the
anchor drift and adds the new classes' prototypes; predict is the dual-path (or CLIP-only, or prototype-only)
prediction over the seen classes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.clip import ClipModel
from ..models.lora import frozen_teacher, lora_switched_off
from .acgd import acgd_loss
from .anchors import AnchorSet, anchor_set, batched_encode, build_anchors, pgd_settings
from .base import Batches, ContinualMethod, Needs
from .prototypes import PrototypeMemory, dual_path_probs, prototype_probs
from .random_anchors import random_anchors
from .rows import METHODS, Switches, method_switches  # noqa: F401  (METHODS: re-exported)
from .tsgr import RootedGeometryRegularizer, TextGeometryRegularizer


class Learner(ContinualMethod):
    """SeGP-CL and every row of the paper's tables, as configurations of one method (see METHODS)."""

    def __init__(self, *args, **kwargs):
        """The arguments of ContinualMethod (model, class names, templates, task sizes, method config, ...)."""
        super().__init__(*args, **kwargs)
        model = self.model
        if self.raw_space and self.uses_prototypes and model.raw_dim is None:
            raise ConfigError(
                "method.prototype_space=raw needs a visual tower with a projection (open_clip ViT); "
                "use --set method.prototype_space=embed"
            )
        self.teacher: ClipModel | None = None
        self.teacher_text: torch.Tensor | None = None
        self.anchors: AnchorSet | None = None
        self.tsgr: RootedGeometryRegularizer | TextGeometryRegularizer | None = None
        self._zero_shot_text: torch.Tensor | None = None
        self._anchor_gen = torch.Generator()
        self.anchor_builder = build_anchors
        """The DPGD function anchors are built with (the overhead bench swaps in a timed wrapper)."""

    @property
    def switches(self) -> Switches:
        return method_switches(self.cfg.name)

    @property
    def raw_space(self) -> bool:
        """Prototypes in the raw visual space (the pooled output before the projection), as the paper."""
        return self.cfg.prototype_space == "raw"

    @classmethod
    def needs(cls, name: str) -> Needs:
        s = method_switches(name)
        return Needs(lora=s.train, epochs=s.train, reference_images=s.source == "ref")

    def prototype_dim(self) -> int:
        raw = self.model.raw_dim
        return raw if self.raw_space and raw else self.model.embed_dim

    # -- bookkeeping ---------------------------------------------------------------------------------
    @property
    def uses_prototypes(self) -> bool:
        """Prototypes are kept for inference (dual path, NCM), for transfer, and as DPGD's visual targets."""
        s = self.switches
        pgd_targets = s.acgd and s.source == "anchors" and self.cfg.anchors == "pgd" and not s.text_only_pgd
        return s.transfer or s.visual_branch or s.ncm or (pgd_targets and self.cfg.lambda_p != 0)

    def encoder(self, model: ClipModel) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """images -> (f, p): the joint embedding and the prototype-space feature, from one forward."""
        if self.raw_space and model.raw_dim is not None:
            return model.image_features_and_raw

        def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = model.image_features(x)
            return f, f

        return encode

    @torch.no_grad()
    def zero_shot_text(self) -> torch.Tensor:
        """Zero-shot class embeddings of all classes (LoRA switched off), computed once."""
        if self._zero_shot_text is None:
            with lora_switched_off(self.model), self.autocast():
                self._zero_shot_text = self.class_text(self.model, len(self.tokens) // self.n_templates).float()
        return self._zero_shot_text

    # -- task hooks ----------------------------------------------------------------------------------
    def before_task(self, t: int, train_batches: Batches) -> dict:
        """Prepare task t. train_batches iterates the task's training set unshuffled, (images, labels) on
        the device; it is only called when anchors are needed. Returns information for the log."""
        self.task = t
        self.anchors, self.tsgr, self.teacher = None, None, None
        self._anchor_gen.manual_seed(torch.initial_seed() + 1000)  # the engine seeded (seed, task) just before
        info: dict = {}
        s, cfg = self.switches, self.cfg
        if not s.train:
            return info
        n_old, n_seen = self.n_old(), self.n_seen()
        use_tsgr = s.tsgr and self.text_has_lora and cfg.lambda_tsgr > 0 and t + 1 >= cfg.tsgr_from_task
        if use_tsgr and cfg.tsgr_mode == "rooted":
            self.tsgr = RootedGeometryRegularizer(
                self.zero_shot_text()[:n_seen], list(range(n_old, n_seen)), cfg.tsgr_k or 10, cfg.tsgr_tau
            )
            info["tsgr_edges"] = self.tsgr.n_edges
        if t == 0 or not (s.acgd or use_tsgr):
            return info
        self.teacher = frozen_teacher(self.model)
        with torch.no_grad():
            self.teacher_text = self.class_text(self.teacher, n_seen)
        if use_tsgr and cfg.tsgr_mode == "edges":
            self.tsgr = TextGeometryRegularizer(self.teacher_text, cfg.tsgr_k, cfg.tsgr_threshold)
            info["tsgr_edges"] = self.tsgr.n_edges
        if s.acgd and s.source != "new":
            self.anchors = self._build_source(train_batches, n_old)
            info["anchors"] = len(self.anchors)
            if self.anchors.stats:
                info["anchor_stats"] = self.anchors.stats
        return info

    def _build_source(self, train_batches: Batches, n_old: int) -> AnchorSet:
        s = self.switches
        if s.source == "ref":
            images = self.reference_images.to(self.device)
            index = torch.arange(len(images), device=self.device)
            scale = float(self.teacher.logit_scale())
            anchors, _ = anchor_set(
                self.encoder(self.teacher),
                images,
                index,
                index,
                self.teacher_text,
                n_old,
                scale,
                autocast=self.autocast,
            )
            anchors.targets = anchors.teacher_logits.argmax(dim=1)  # each image's nearest old class, same forward
            return anchors
        if s.source == "random":
            rank = self.comm.rank if self.comm is not None else 0  # each shard draws its own keys
            return random_anchors(
                self.encoder(self.teacher),
                (images for images, _ in train_batches),
                self.teacher_text,
                n_old,
                float(self.teacher.logit_scale()),
                k_seed=self.cfg.k_seed,
                generator=torch.Generator().manual_seed(torch.initial_seed() + 2000 + rank),
                autocast=self.autocast,
                comm=self.comm,
            )
        pgd = s.source == "anchors" and self.cfg.anchors == "pgd"
        return self._dpgd(self.teacher, self.teacher_text, train_batches, n_old, pgd, s.text_only_pgd)

    def probe_anchors(self, teacher: ClipModel, train_batches: Batches) -> AnchorSet:
        """DPGD anchors of the current task from `teacher` with the configured settings, for methods that build
        none (the drift diagnostic's "where would the anchors be"); the method never sees them. The prototype
        target is used only where the method keeps prototypes."""
        with torch.no_grad():
            teacher_text = self.class_text(teacher, self.n_seen())
        return self._dpgd(teacher, teacher_text, train_batches, self.n_old(), True, self.switches.text_only_pgd)

    def _dpgd(
        self,
        teacher: ClipModel,
        teacher_text: torch.Tensor,
        train_batches: Batches,
        n_old: int,
        pgd: bool,
        text_only: bool,
    ) -> AnchorSet:
        cfg = self.cfg
        lambda_p = 0.0 if text_only else cfg.lambda_p
        protos = self.prototypes.matrix(n_old, device=self.device) if lambda_p != 0 and len(self.prototypes) else None
        return self.anchor_builder(
            self.encoder(teacher),
            (images for images, _ in train_batches),
            teacher_text,
            n_old,
            protos,
            float(teacher.logit_scale()),
            lambda_p=lambda_p,
            pgd=pgd,
            autocast=self.autocast,
            comm=self.comm,
            **pgd_settings(cfg),
        )

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """CE + lambda_A * ACGD + lambda_T * TSGR for one batch of new-task images."""
        cfg = self.cfg
        n_seen, n_old = self.n_seen(), self.n_old()
        with self.autocast():  # the text tower runs every step when it has LoRA: bf16 on CUDA like the images
            text = self.student_text(n_seen)
        anchor_idx = None
        x = images
        if self.anchors is not None and cfg.lambda_acgd > 0 and len(self.anchors):
            k = min(cfg.anchors_per_step, len(self.anchors))
            anchor_idx = torch.randperm(len(self.anchors), generator=self._anchor_gen)[:k].to(self.device)
            x = torch.cat([images, self.anchors.images[anchor_idx]])
        with self.autocast():
            feats = self.model.image_features(x)
        scale = self.model.logit_scale()
        batch_feats = feats[: len(images)]
        if cfg.ce_classes == "task":
            ce = F.cross_entropy(scale * batch_feats @ text[n_old:].T, labels - n_old)
        else:
            ce = F.cross_entropy(scale * batch_feats @ text.T, labels)
        parts = {"ce": ce.detach()}
        loss = ce
        if anchor_idx is not None:
            student_logits = scale * feats[len(images) :] @ text[:n_old].T
            kl = acgd_loss(student_logits, self.anchors.teacher_logits[anchor_idx], cfg.tau)
            loss = loss + cfg.lambda_acgd * kl
            parts["acgd"] = kl.detach()
        if self.switches.source == "new" and self.teacher is not None and n_old > 0 and cfg.lambda_acgd > 0:
            with torch.no_grad(), self.autocast():
                t_feats = self.teacher.image_features(images)
            teacher_logits = self.teacher.logit_scale() * t_feats @ self.teacher_text[:n_old].T
            kl = acgd_loss(scale * batch_feats @ text[:n_old].T, teacher_logits, cfg.tau)
            loss = loss + cfg.lambda_acgd * kl
            parts["distill_new"] = kl.detach()
        if self.tsgr is not None:
            reg = self.tsgr.loss(text)
            loss = loss + cfg.lambda_tsgr * reg
            parts["tsgr"] = reg.detach()
        return loss, parts

    @torch.no_grad()
    def after_task(self, t: int, train_batches: Batches) -> dict:
        """Transfer the old prototypes by the anchor drift, then add the new classes' prototypes."""
        self.teacher = None
        info: dict = {}
        if not self.uses_prototypes:
            return info
        n_old = self.n_old()
        if self.switches.transfer and self.cfg.migrate != "none" and self.anchors is not None and n_old:
            _, after = self._encode_batched(self.anchors.images)
            shifts = self.prototypes.migrate(
                self.anchors.teacher_features,
                after,
                classes=list(range(n_old)),
                mode=self.cfg.migrate,
                sigma=self.cfg.sigma,
                anchor_targets=self.anchors.targets,
            )
            info["mean_prototype_shift"] = float(shifts.norm(dim=1).mean())
        if self.comm is None:
            for images, labels in train_batches:
                self.prototypes.add(self._encode_batched(images)[1], labels)
            return info
        shard = PrototypeMemory(self.prototypes.bank.dim)  # this rank's shard, then every rank's, in rank order
        for images, labels in train_batches:
            shard.add(self._encode_batched(images)[1], labels)
        for state in self.comm.gather(shard.state_dict() if len(shard) else None):
            if state is not None:
                self.prototypes.bank.add_sums(state["class_ids"], state["sums"], state["counts"])
        return info

    def _encode_batched(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return batched_encode(self.encoder(self.model), images, autocast=self.autocast)

    # -- inference -----------------------------------------------------------------------------------
    @property
    def prototype_inference(self) -> bool:
        s = self.switches
        return s.ncm or (s.visual_branch and self.cfg.beta > 0)

    @torch.no_grad()
    def begin_eval(self, t: int) -> None:
        """Cache what prediction needs after task t: text embeddings and normalised prototypes."""
        n = self.n_seen(t)
        self._eval_text = self.student_text(n)  # cached across tasks while the text tower is frozen
        use_protos = self.prototype_inference and len(self.prototypes) > 0
        # classes without a prototype get a zero row: dual_path_probs scores them by CLIP alone
        self._eval_protos = self.prototypes.matrix(n, device=self.device) if use_protos else None

    @torch.no_grad()
    def use_branch(self, t: int, branch: str) -> None:
        """Predict after task t with the run's own inference ("run"), CLIP alone ("clip"), or CLIP fused with
        the prototype branch ("dual"; only where prototypes were kept and beta > 0)."""
        self.begin_eval(t)
        if branch == "clip":
            self._eval_protos = None
        elif branch == "dual" and (self._eval_protos is None or self.switches.ncm):
            if not len(self.prototypes) or self.cfg.beta == 0 or self.switches.ncm:
                raise ConfigError(
                    f"the run's method {self.cfg.name!r} has no dual path (no prototypes, beta = 0, or "
                    "the prototype branch alone): use --branch clip or run"
                )
            self._eval_protos = self.prototypes.matrix(self.n_seen(t), device=self.device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, n_seen] (call begin_eval first)."""
        scale = float(self.model.logit_scale())
        with self.autocast():
            if self._eval_protos is None:
                feats, proto_feats = self.model.image_features(images), None
            else:
                feats, proto_feats = self.encoder(self.model)(images)
        feats = feats.float()
        if proto_feats is None:
            return dual_path_probs(feats, self._eval_text, None, None, scale, scale, 0.0)
        proto_feats = proto_feats.float()
        proto_scale = self.cfg.proto_scale if self.cfg.proto_scale is not None else scale
        if self.switches.ncm:
            return prototype_probs(proto_feats, self._eval_protos, proto_scale)
        return dual_path_probs(
            feats, self._eval_text, proto_feats, self._eval_protos, scale, proto_scale, self.cfg.beta, self.cfg.fusion
        )
