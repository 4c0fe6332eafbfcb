"""The method interface: what the engine calls, and what a continual-learning method implements.

The engine (engine/run.py) owns loops, devices, data loaders, checkpoints and processes; a method owns what is
learned. For each task t (0-based) the engine calls, in this order:

1. ``before_task(t, batches) -> dict``: prepare task t (a teacher, anchors, a regulariser). ``batches`` is an
   iterable over the task's training images, unshuffled, as (images on the device, stream labels); it may be
   iterated several times and is only read when the method needs it. The dict goes into the task's log.
2. ``training_loss(images, labels) -> (loss, parts)`` for every training batch of every epoch, when
   ``needs(name).epochs`` (the engine optimises ``trainable_parameters()`` with the run's optimiser, clips,
   steps and averages gradients across processes; with ``needs(name).lora`` it applies LoRA from the run's
   ``lora`` section before the method is built and saves the adapter in every checkpoint). ``parts``: named
   detached scalars (tensors), averaged per task into metrics.json. After each epoch the engine asks
   ``should_stop(epoch)``: True ends the task's epochs there (default False: all train.epochs run).
3. ``after_task(t, batches) -> dict``: finish task t (prototypes, a weight average).
4. ``begin_eval(t)`` then ``predict(images) -> [B, n_seen]`` class probabilities over the classes seen up to
   task t; ``use_branch(t, branch)`` picks another inference where the method has one (``clip``, ``dual``).
   The engine measures forward transfer and the "CLIP branch only" matrix through ``use_branch(t, "clip")``.
5. ``state_dict()`` / ``load_state_dict(state)``: what a checkpoint keeps besides the LoRA adapter:
   ``{"task": t, "prototypes": PrototypeMemory state, "tensors": {name: tensor}}`` ("tensors" optional, saved
   as safetensors; nothing in a checkpoint is ever unpickled).

What a method may need is declared, not discovered: ``needs(name)`` says whether LoRA is applied, whether
training epochs run, and whether a reference image set (``method.reference``) must be loaded. The helpers
below give every method the class text embeddings, the seen/old class counts and CLIP's own prediction, so a
new method is one small file: subclass
ContinualMethod, implement ``training_loss`` (and any hook it needs), and register it
(``segpcl.method.registry.register_method``). Labels are positions in the stream's class order: classes of
task t are ``n_old() .. n_seen() - 1``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ..config import MethodSection
from ..errors import ConfigError
from ..models.clip import ClipModel
from ..models.lora import lora_parameters
from ..models.text import class_prompts, class_text_embeddings
from .prototypes import PrototypeMemory, dual_path_probs

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Needs:
    """What the engine must provide a method with, before it is built."""

    lora: bool = True
    """LoRA is applied (the run's `lora` section) before the method is built, and saved in every checkpoint."""
    epochs: bool = True
    """The engine runs train.epochs of training_loss over each task's images, optimising trainable_parameters()."""
    reference_images: bool = False
    """A reference image set (`method.reference`, ZSCL-style) is loaded and passed in."""


class ContinualMethod:
    """The base of every method: the interface above, with CLIP's own inference as the default prediction."""

    NEEDS = Needs()

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
        reference_images: torch.Tensor | None = None,
    ):
        self.model = model
        self.cfg = cfg
        self.task_sizes = task_sizes
        self.device = torch.device(device)
        self.autocast = autocast
        self.text_has_lora = text_has_lora
        self.n_templates = len(templates)
        self.tokens = model.tokenize(class_prompts(class_names, templates)).to(self.device)
        if self.needs(cfg.name).reference_images and reference_images is None:
            raise ConfigError(f"method {cfg.name} needs reference images: --set method.reference=DIR")
        self.reference_images = reference_images
        self.prototypes = PrototypeMemory(self.prototype_dim())
        self.task = -1
        self._frozen_text: torch.Tensor | None = None
        self._eval_text: torch.Tensor | None = None
        self._eval_protos: torch.Tensor | None = None
        self.comm = None
        """Set by the engine under several processes (engine/distributed.py AnchorComm): the batches given to
        before_task/after_task are then this rank's shard, merged through it."""

    @classmethod
    def needs(cls, name: str) -> Needs:
        """What the method called `name` needs from the engine (a class may serve several names)."""
        return cls.NEEDS

    def prototype_dim(self) -> int:
        return self.model.embed_dim

    # -- bookkeeping ---------------------------------------------------------------------------------
    @property
    def trains(self) -> bool:
        """Whether the engine runs training epochs for this method."""
        return self.needs(self.cfg.name).epochs

    @property
    def has_lora(self) -> bool:
        return self.needs(self.cfg.name).lora

    def n_seen(self, t: int | None = None) -> int:
        """Classes seen up to and including task t (default: the current task)."""
        t = self.task if t is None else t
        return sum(self.task_sizes[: t + 1])

    def n_old(self) -> int:
        """Classes of the tasks before the current one."""
        return self.n_seen(self.task - 1) if self.task > 0 else 0

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the engine's optimiser updates (default: the LoRA parameters)."""
        return lora_parameters(self.model)

    def class_text(self, model: ClipModel, n_classes: int) -> torch.Tensor:
        """Class embeddings of the first `n_classes` classes under `model` (mean over templates)."""
        return class_text_embeddings(model, self.tokens[: n_classes * self.n_templates], self.n_templates)

    def student_text(self, n_classes: int) -> torch.Tensor:
        """The model's class embeddings; computed once and cached while the text tower has no LoRA."""
        if self.text_has_lora and self.trains:
            return self.class_text(self.model, n_classes)
        if self._frozen_text is None or len(self._frozen_text) < n_classes:
            with torch.no_grad():
                self._frozen_text = self.class_text(self.model, len(self.tokens) // self.n_templates)
        return self._frozen_text[:n_classes]

    # -- task hooks ----------------------------------------------------------------------------------
    def before_task(self, t: int, train_batches: Batches) -> dict:
        self.task = t
        return {}

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError(f"{type(self).__name__} trains LoRA but defines no training_loss")

    def should_stop(self, epoch: int) -> bool:
        """Asked after each training epoch (`epoch`: 0-based, just completed): True ends the task's epochs there
        (MG-CLIP stops by a drift rule). Under several processes every rank must answer alike."""
        return False

    def after_task(self, t: int, train_batches: Batches) -> dict:
        return {}

    def feature_head(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The map the method applies, as it stands now, to CLIP's normalised image features [N, d] before it
        compares them with the class text (None: none, CLIP's own). The drift diagnostic measures through it;
        the returned function must not change when the method trains on (RAPF: a copy of its W)."""
        return None

    # -- inference -----------------------------------------------------------------------------------
    @property
    def eval_text(self) -> torch.Tensor | None:
        """The class embeddings prediction uses (set by begin_eval)."""
        return self._eval_text

    @property
    def eval_prototypes(self) -> torch.Tensor | None:
        """The prototype matrix prediction fuses with CLIP (None: CLIP alone), set by begin_eval/use_branch."""
        return self._eval_protos

    @property
    def predicts_by_clip(self) -> bool:
        """Whether predict, as begin_eval left it, is the CLIP branch alone: the engine then takes the method's
        own accuracy matrix as its "CLIP branch only" matrix instead of evaluating again. A method whose predict
        is something else without eval_prototypes overrides this."""
        return self._eval_protos is None

    @torch.no_grad()
    def begin_eval(self, t: int) -> None:
        """Cache what prediction needs after task t (the seen classes' text embeddings)."""
        self._eval_text = self.student_text(self.n_seen(t))
        self._eval_protos = None

    def use_branch(self, t: int, branch: str) -> None:
        """Predict after task t with the method's own inference ("run") or CLIP alone ("clip")."""
        self.begin_eval(t)
        if branch == "clip":
            self._eval_protos = None
        elif branch == "dual" and self._eval_protos is None:
            raise ConfigError(f"the run's method {self.cfg.name!r} has no dual path: use --branch clip or run")

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, n_seen] by CLIP (call begin_eval first)."""
        scale = float(self.model.logit_scale())
        with self.autocast():
            feats = self.model.image_features(images)
        return dual_path_probs(feats.float(), self._eval_text, None, None, scale, scale, 0.0)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"task": self.task, "prototypes": self.prototypes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.task = int(state["task"])
        self.prototypes.load_state_dict(state["prototypes"])

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors besides the model's weights and the prototypes that predict needs: `segpcl export` writes them
        to method.safetensors (the method's module docs say how predict uses them). None by default."""
        return {}
