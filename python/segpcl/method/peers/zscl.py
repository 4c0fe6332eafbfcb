"""ZSCL: "Preventing Zero-Shot Transfer Degradation in Continual Learning of Vision-Language Models" (Zheng et al.,
ICCV 2023), as its class-incremental code does it (github.com/Thunderbeee/ZSCL at b96e714: cil/continual_clip/
models.py ClassIncremental.train, cil/continual_clip/utils.py, cil/configs/class/*-ZSCL.yaml).

- `zscl` fine-tunes the whole model: every parameter but the logit scale, both towers. `zscl-lora` trains the
  run's LoRA (the `lora` section) instead, with the same loss: the issue's option, not in ZSCL's code.
- Loss of a step: cross-entropy with label smoothing (`zscl_label_smoothing`) of s cos(f, T_c) over the current
  task's classes only, T_c the model's own text embeddings (trained with it); plus `zscl_weight` times each of
  two distillation terms from the *initial* CLIP (a frozen copy of the model as built, before any task) on a
  batch of reference images as large as the step's batch. With R the initial model's embeddings of the
  reference sentences, f and g the current and the initial model's normalised features of those images and s
  the logit scale: L = s f R^T, L0 = s g R^T; image->text: tau^2 CE(softmax(L0 / tau), L / tau), mean over the
  images (rows); text->image: the same on the transposes (each sentence's distribution over the batch's
  images). The text tower gets no distillation gradient (R is the initial model's, as in the code).
- Weight average: the task's running average starts at the weights the task starts from; after optimiser steps
  1, 1 + k, 1 + 2k, ... (k = `zscl_avg_every`) the weights join it (average <- (n average + w) / (n + 1), n the
  models in it); after the task's last step the average becomes the model (0: no averaging).
- Inference: CLIP's own with the model's weights: softmax of s cos(f, T) over the seen classes.
- Checkpoints: `zscl` keeps every trained weight of the model in method.safetensors, in every task's checkpoint:
  598 MB a task for ViT-B/16 (149.6M parameters in fp32), 16 MB for the toy CLIP; `segpcl export` writes them
  as model.safetensors. `zscl-lora` keeps the LoRA adapter only.

Where this differs from the code, and why:
- The two terms are the code's soft-target cross-entropy (utils.py `distillation`), which the issue calls a KL:
  the same gradient; the logged values exceed the KL by the initial model's entropy (they do not start at 0).
- The "WiSE-style ensemble" of the issue is the code's uniform running average (utils.py `merge_we`; its
  `wise_we` is unused in cil/).
- ZSCL runs one epoch plus one batch per task (`range(total_iterations + 1)`); here the engine runs train.epochs
  over the task's batches. Its warm-up of 30 steps is the preset's train.warmup_frac (a share of the steps).
- ZSCL's reference set is Conceptual Captions' validation split: images (`method.reference`) and their captions
  (`method.zscl_ref_text`, one sentence a line); on the toy benchmark's default reference set, the toy world's
  captions. ZSCL embeds every caption and runs the frozen model on the reference batch at every step: neither
  changes, so here both are encoded once (no augmentation of the reference images here).
- Reference batches: a running permutation of the reference images, redrawn when used up (ZSCL: a shuffled
  DataLoader restarted when exhausted).
- Under torchrun every rank draws the same global reference batch (its batch size times the ranks) and keeps
  every world-th image: the image->text term is one process's, the text->image term's distribution runs over the
  rank's share of the images. A rank whose whole batch is unreadable steps without training_loss and would
  count the averaging steps differently: not handled (the engine logs unreadable images).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...config import MethodSection
from ...errors import ConfigError
from ...models.lora import frozen_teacher
from ...models.text import class_text_embeddings
from ..base import Batches, ContinualMethod, Needs

ENCODE_CHUNK = 256
"""Reference images and sentences encoded per forward when they are first embedded."""


def distillation(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """ZSCL's distillation (utils.py): tau^2 times the cross-entropy of softmax(student / tau) to the soft targets
    softmax(teacher / tau), row by row, mean over the rows."""
    targets = F.softmax(teacher_logits / temperature, dim=1)
    return F.cross_entropy(student_logits / temperature, targets) * temperature**2


def zscl_terms(
    student: torch.Tensor, teacher: torch.Tensor, sentences: torch.Tensor, scale: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text, text->image) distillation of normalised image features [B, d] (student: the current model's,
    teacher: the initial model's) against the initial model's sentence embeddings [S, d]."""
    now, before = scale * student @ sentences.T, scale * teacher @ sentences.T
    return distillation(before, now, temperature), distillation(before.T, now.T, temperature)


@torch.no_grad()
def merge_average(average: list[torch.Tensor], params: list[torch.Tensor], count: int) -> None:
    """ZSCL's merge_we, in place: average <- (count average + params) / (count + 1), `count` the models already in
    the average."""
    for a, p in zip(average, params, strict=True):
        a.mul_(count).add_(p.detach()).div_(count + 1)


def toy_captions() -> list[str]:
    """Every phrasing of every caption the toy CLIP was pretrained on (segpcl.toyworld), once each."""
    from ... import toyworld as tw

    return list(
        dict.fromkeys(
            template.format(name, size=size, name=name)
            for name in tw.CLASS_NAMES
            for size in tw.SIZES
            for template in tw.CAPTION_TEMPLATES
        )
    )


def reference_sentences(cfg: MethodSection) -> list[str]:
    """The sentences the distillation compares images with: method.zscl_ref_text, or the toy world's captions
    where the reference images are the toy's default set (method.reference unset: engine/reference_images.py)."""
    if cfg.zscl_ref_text is None:
        if cfg.reference is None:
            return toy_captions()
        raise ConfigError(
            f"method {cfg.name} compares the reference images with reference sentences: give a text file with "
            "--set method.zscl_ref_text=FILE (one sentence a line, e.g. captions of the method.reference images)"
        )
    path = Path(cfg.zscl_ref_text).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"method.zscl_ref_text {path} cannot be read ({type(exc).__name__}); give a UTF-8 text file, one "
            "sentence a line"
        ) from None
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise ConfigError(f"method.zscl_ref_text {path} holds no sentence; give one sentence a line")
    return sentences


class ZSCL(ContinualMethod):
    """ZSCL (see the module docs): fine-tuning with distillation from the initial CLIP and a weight average."""

    NEEDS = Needs(lora=False, epochs=True, reference_images=True)

    @classmethod
    def needs(cls, name: str) -> Needs:
        return Needs(lora=name == "zscl-lora", epochs=True, reference_images=True)

    def __init__(self, *args, **kwargs):
        """The arguments of ContinualMethod."""
        super().__init__(*args, **kwargs)
        self.full = not self.has_lora
        if self.full:  # ZSCL's optimiser takes every parameter but the logit scale
            for name, param in self.model.clip.named_parameters():
                param.requires_grad_(not name.endswith(("logit_scale", "logit_bias")))
        # a run reopened for inference gets an empty reference set: it needs neither the initial model nor text
        self.distils = len(self.reference_images) > 0
        self.initial = frozen_teacher(self.model) if self.distils else None
        self.sentences = reference_sentences(self.cfg) if self.distils else []
        self.ref_text: torch.Tensor | None = None
        self.ref_feats: torch.Tensor | None = None
        self._queue = torch.zeros(0, dtype=torch.long)
        self._gen = torch.Generator()
        self._average: list[torch.Tensor] | None = None
        self._count = self._steps = self._merged = 0

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        if self.full:
            return [p for p in self.model.clip.parameters() if p.requires_grad]
        return super().trainable_parameters()

    def student_text(self, n_classes: int) -> torch.Tensor:
        """The model's class embeddings: recomputed while the whole model trains (base: cached unless LoRA)."""
        if self.full:
            return self.class_text(self.model, n_classes)
        return super().student_text(n_classes)

    # -- task hooks ----------------------------------------------------------------------------------
    def before_task(self, t: int, train_batches: Batches) -> dict:
        """Encode the reference set by the initial model (once), start the task's weight average."""
        self.task = t
        self._gen.manual_seed(torch.initial_seed() + 4000)  # the engine seeded (seed, task) just before
        self._queue = torch.zeros(0, dtype=torch.long)
        if self.ref_text is None:
            self._encode_reference()
        every = self.cfg.zscl_avg_every
        self._average = [p.detach().clone() for p in self.trainable_parameters()] if every else None
        self._count, self._steps, self._merged = 1, 0, 0
        return {"reference_images": len(self.ref_feats), "reference_sentences": len(self.ref_text)}

    @torch.no_grad()
    def _encode_reference(self) -> None:
        model, images = self.initial, self.reference_images
        tokens = model.tokenize(self.sentences)
        with self.autocast():
            text = [model.text_features(tokens[i : i + ENCODE_CHUNK]) for i in range(0, len(tokens), ENCODE_CHUNK)]
            feats = [
                model.image_features(images[i : i + ENCODE_CHUNK].to(self.device))
                for i in range(0, len(images), ENCODE_CHUNK)
            ]
        self.ref_text, self.ref_feats = torch.cat(text).float(), torch.cat(feats).float()

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Label-smoothed CE over the task's classes plus the two distillation terms on a reference batch."""
        self._average_step()  # the weights after the steps taken so far
        self._steps += 1
        n_old, n_seen, k = self.n_old(), self.n_seen(), self.n_templates
        scale = float(self.model.logit_scale().detach())
        with self.autocast():
            if self.full or self.text_has_lora:
                text = class_text_embeddings(self.model, self.tokens[n_old * k : n_seen * k], k)
            else:
                text = self.student_text(n_seen)[n_old:]
            feats = self.model.image_features(images)
        logits = scale * feats.float() @ text.float().T
        ce = F.cross_entropy(logits, labels - n_old, label_smoothing=self.cfg.zscl_label_smoothing)
        parts = {"ce": ce.detach()}
        if self.cfg.zscl_weight == 0:
            return ce, parts
        index = self._reference_batch(len(images))
        with self.autocast():
            student = self.model.image_features(self.reference_images[index].to(self.device))
        to_text, to_image = zscl_terms(
            student.float(), self.ref_feats[index.to(self.device)], self.ref_text, scale, self.cfg.zscl_temperature
        )
        parts.update(zscl_image=to_text.detach(), zscl_text=to_image.detach())
        return ce + self.cfg.zscl_weight * (to_text + to_image), parts

    def _reference_batch(self, n: int) -> torch.Tensor:
        """This rank's share (every world-th) of the next n * world indices of the running permutation."""
        world, rank = (self.comm.world, self.comm.rank) if self.comm is not None else (1, 0)
        total = n * world
        while len(self._queue) < total:
            self._queue = torch.cat([self._queue, torch.randperm(len(self.ref_feats), generator=self._gen)])
        take, self._queue = self._queue[:total], self._queue[total:]
        return take[rank::world]

    def _average_step(self) -> None:
        """Add the weights after `_steps` optimiser steps to the average when that is step 1, 1 + k, 1 + 2k, ..."""
        s, every = self._steps, self.cfg.zscl_avg_every
        if self._average is None or s == 0 or (s - 1) % every or self._merged == s:
            return
        merge_average(self._average, self.trainable_parameters(), self._count)
        self._count, self._merged = self._count + 1, s

    @torch.no_grad()
    def after_task(self, t: int, train_batches: Batches) -> dict:
        """The task's weight average (with the last step's weights where it is due) becomes the model."""
        if self._average is None:
            return {}
        self._average_step()
        for param, mean in zip(self.trainable_parameters(), self._average, strict=True):
            param.copy_(mean)
        self._average = None
        return {"averaged_models": self._count}

    # -- checkpoints ---------------------------------------------------------------------------------
    def _trained(self) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in self.model.clip.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.full:  # the whole model's trained weights (zscl-lora: the engine saves the adapter)
            state["tensors"] = {name: p.detach() for name, p in self._trained().items()}
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if not self.full:
            return
        tensors, params = state.get("tensors") or {}, self._trained()
        if set(tensors) != set(params):
            odd = sorted(set(tensors) ^ set(params))
            raise ValueError(f"the checkpoint's ZSCL weights do not match this model ({len(odd)} names, e.g. {odd[0]})")
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))
