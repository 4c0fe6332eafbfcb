"""MG-CLIP: "Mind the Gap: Preserving and Compensating for the Modality Gap in CLIP-Based Continual Learning"
(ICCV 2025), as its public code does it (github.com/linlany/MindtheGap at f40bfce: main.py, epoch.py,
continual_clip/models.py, loraclip/, configs/class/*.yaml).

- LoRA on the keys and values of every attention in both towers (lora_mode "vision+only_kv+text"), shared
  across tasks: k and v each get their own rank-8 A (xavier-uniform) and B (zeros), scaled by lora_alpha / r =
  1 / 8, A and B both trained. segpcl packs q, k, v into one Linear `in_proj` [3d, d] (models/attention.py), so
  here one peft LoRA of rank 16 sits on it with B masked: its k rows use the first 8 columns, its v rows the last
  8, every other entry is zero and kept zero by a gradient hook. Then B A = [0; B_k A_k; B_v A_v]: two rank-8
  LoRAs with their own A, and the q rows of the weight never change. `lora.rank` is the two ranks together (it
  must be even); `lora.alpha: 2` gives the scaling 1 / 8. peft counts the masked entries as parameters.
- Loss: cross-entropy of s cos(f, T_c) (CLIP's logit scale, the class texts through the text LoRA, one prompt)
  over the first task's classes; from the second task on over the current task's classes only (main.py
  intra_cls).
- Epochs: epoch.py trains the first task for up to 10 epochs and after each measures the mean non-target logit
  on the task's training images (eval mode) against the pretrained model's; at the first (0-based) epoch i where
  |m_pre - m| / m_pre > 0.1 it reports i epochs (1 when i = 0), and main.py runs that many on every task (its
  configs: 1 on CIFAR-100, 2 on ImageNet-R and ImageNet-100). Here one run does both: the first task trains
  until the rule fires (`should_stop`), goes back to the weights after the epochs it keeps, and every later
  task stops after as many (method.mgclip_drift: the threshold; null: train.epochs everywhere, main.py with a
  fixed `epochs`).
- Visual agent: after each task's epochs, a bias-free cosine classifier on the adapted model's normalised image
  features (frozen; rows and features normalised, no scale): the task's new rows start at its class means and
  train with cross-entropy over the task's columns only (the old rows keep their values), Adam with a cosine
  decay to 1 % over its steps.
- Inference: (1 softmax(p) + 4 softmax(cos(f, W))) / 5 over the seen classes, where p is already the softmax of
  s cos(f, T). The issue says "weighted probabilities"; the code applies F.softmax to the test forward's output,
  which models.py has softmaxed already, so the CLIP probabilities pass through a second softmax (as flat as the
  agent's unscaled cosines): kept, it is what MG-CLIP's numbers come from.

Where this differs from the code, and why:
- The learning rate: MG-CLIP steps a cosine over the task's epochs once per epoch (floor 1 %; epoch.py's over
  10). The engine's cosine spans train.epochs (10, epoch.py's) per step and is not told where the rule stops, so
  a later task of E epochs runs the first E of 10 (E = 2: its second epoch at 0.98-0.9 lr, MG-CLIP's at
  0.5).
- The rule divides by |m_pre|, epoch.py by m_pre: the same where m_pre > 0 (OpenAI CLIP: image-text cosines
  well above 0), but a model whose mean is negative (the toy CLIP's: -0.2) would never stop by the code's;
  "drifts more than 10 %" (the issue) is this rule on either sign.
- The mean non-target logit is the mean over images (epoch.py: the mean of a shuffled loader's batch means;
  equal up to the weight of the last batch). epoch.py reloads the pretrained weights to measure the reference;
  at the first task LoRA's B is zero, so the model is the pretrained one.
- The agent's features are encoded once per task (the model is frozen while it trains, so main.py's re-encoding
  each epoch gives the same features) and shuffled by a generator of the run's seed.
- A class without a readable training image has no mean to start its row from: a DataError.
- Under torchrun each rank measures its shard and the sums are gathered; the agent trains on every rank's
  features in dataset order, so every rank holds the agent one process would.
- Left out: the replay and balanced fine-tuning options (exemplars; off in every config).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...errors import ConfigError, DataError
from ...models.attention import LinearSelfAttention
from ...models.text import class_text_embeddings
from ..base import Batches, ContinualMethod, Needs


def kv_lora_weights(model) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(A [r, d], B [3d, r]) of the peft LoRA on every attention in-projection [q; k; v] of the model."""
    out = []
    for module in model.base.modules():
        if isinstance(module, LinearSelfAttention) and hasattr(module.in_proj, "lora_B"):
            for name in module.in_proj.lora_B:
                out.append((module.in_proj.lora_A[name].weight, module.in_proj.lora_B[name].weight))
    return out


def kv_mask(out_features: int, rank: int) -> torch.Tensor:
    """0/1 mask of B [3d, r]: the k rows keep columns 0 .. r/2 - 1, the v rows the rest, the q rows none."""
    d, half = out_features // 3, rank // 2
    mask = torch.zeros(out_features, rank)
    mask[d : 2 * d, :half] = 1
    mask[2 * d :, half:] = 1
    return mask


def nontarget_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[sum over images of the mean logit of the classes other than the image's own, number of images] (float64)."""
    logits = logits.double()
    own = logits.gather(1, targets[:, None].long()).squeeze(1)
    per_image = (logits.sum(1) - own) / (logits.shape[1] - 1)
    return torch.stack([per_image.sum(), torch.tensor(float(len(per_image)), dtype=torch.float64)]).cpu()


def logit_drift(pretrained: float, now: float) -> float:
    """The relative change of the mean non-target logit: |pretrained - now| / |pretrained|."""
    return abs(pretrained - now) / max(abs(pretrained), 1e-12)


def class_means(feats: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean feature [n_classes, d] of each class 0 .. n_classes - 1 (targets: positions in the task)."""
    counts = torch.bincount(targets, minlength=n_classes)
    if bool((counts == 0).any()):
        missing = int(torch.nonzero(counts == 0)[0])
        raise DataError(
            f"mgclip: class {missing + 1} of the task has no readable training image, so its visual-agent row has "
            "no class mean to start from; fix or remove the unreadable files"
        )
    sums = torch.zeros(n_classes, feats.shape[1], device=feats.device).index_add_(0, targets, feats.float())
    return sums / counts[:, None].to(sums.dtype)


def train_agent(
    init: torch.Tensor,
    feats: torch.Tensor,
    targets: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """The task's rows of the visual agent: from `init`, `epochs` of shuffled batches of cross-entropy over
    cos(f, w) of the task's classes (no scale), Adam with a per-step cosine decay to lr / 100. Returns the rows
    and the mean loss of the last epoch."""
    rows = init.detach().clone().requires_grad_(True)
    steps = math.ceil(len(feats) / batch_size)
    opt = torch.optim.Adam([rows], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps), eta_min=lr * 0.01)
    feats = F.normalize(feats.float(), dim=-1)
    last = []
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(feats), generator=generator).to(feats.device)
            last = []
            for i in range(0, len(feats), batch_size):
                idx = order[i : i + batch_size]
                loss = F.cross_entropy(feats[idx] @ F.normalize(rows, dim=-1).T, targets[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                last.append(loss.item())
    return rows.detach(), sum(last) / max(len(last), 1)


def fuse(clip_probs: torch.Tensor, agent_cos: torch.Tensor, agent_weight: float) -> torch.Tensor:
    """MG-CLIP's prediction: (1 - w) softmax(CLIP's probabilities) + w softmax(the agent's cosines)."""
    return (1 - agent_weight) * F.softmax(clip_probs, dim=-1) + agent_weight * F.softmax(agent_cos, dim=-1)


class MGCLIP(ContinualMethod):
    """MG-CLIP (see the module docs): k/v LoRA, the drift rule on the first task's epochs, the visual agent."""

    NEEDS = Needs(lora=True, epochs=True)

    def __init__(self, *args, **kwargs):
        """The arguments of ContinualMethod."""
        super().__init__(*args, **kwargs)
        self._keep_lora_on_kv()
        self.agent = torch.zeros(0, self.model.embed_dim, device=self.device)
        self.first_epochs = 0
        """Epochs of the first task as the drift rule kept them (every later task trains as many); 0: not known."""
        self.drifts: list[float] = []
        self._pretrained_logit = 0.0
        self._batches: Batches = []
        self._previous: list[torch.Tensor] | None = None
        self._fuse = False
        self._agent_eval = self.agent

    def _keep_lora_on_kv(self) -> None:
        """Mask the in-projections' LoRA to k and v (re-initialising A as MG-CLIP does) and keep it there."""
        layers = kv_lora_weights(self.model)
        if not layers:
            raise ConfigError("mgclip adapts the attention keys and values: keep attn.in_proj in lora.targets")
        for a, b in layers:
            rank = b.shape[1]
            if rank % 2:
                raise ConfigError(f"mgclip splits lora.rank between k and v (MG-CLIP: 8 each, 16); got {rank}")
            mask = kv_mask(b.shape[0], rank).to(device=b.device, dtype=b.dtype)
            with torch.no_grad():
                torch.nn.init.xavier_uniform_(a[: rank // 2])
                torch.nn.init.xavier_uniform_(a[rank // 2 :])
                b.mul_(mask)
            b.register_hook(lambda grad, m=mask: grad * m)

    def _task_text(self) -> torch.Tensor:
        """Text embeddings of the current task's classes (through the text LoRA when it has one)."""
        n_old, n_seen = self.n_old(), self.n_seen()
        if not self.text_has_lora:
            return self.student_text(n_seen)[n_old:]
        k = self.n_templates
        return class_text_embeddings(self.model, self.tokens[n_old * k : n_seen * k], k)

    # -- task hooks ----------------------------------------------------------------------------------
    def before_task(self, t: int, train_batches: Batches) -> dict:
        """Keep the task's batches for the drift rule; on the first task, the pretrained mean non-target logit."""
        self.task = t
        self._batches, self.drifts, self._previous = train_batches, [], None
        if t > 0 or self.cfg.mgclip_drift is None:
            return {}
        self._pretrained_logit = self._mean_nontarget_logit()
        return {"pretrained_nontarget_logit": self._pretrained_logit}

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Cross-entropy over the current task's classes (all seen classes on the first task)."""
        with self.autocast():
            text = self._task_text()
            feats = self.model.image_features(images)
        ce = F.cross_entropy(self.model.logit_scale() * feats @ text.T, labels - self.n_old())
        return ce, {"ce": ce.detach()}

    def should_stop(self, epoch: int) -> bool:
        """The first task: stop once the drift rule fires, back at the weights of the epochs kept; later tasks:
        stop after the first task's epoch count."""
        if self.cfg.mgclip_drift is None:
            return False
        if self.task > 0:
            return 0 < self.first_epochs <= epoch + 1
        drift = logit_drift(self._pretrained_logit, self._mean_nontarget_logit())
        self.drifts.append(drift)
        params = self.trainable_parameters()
        if not drift > self.cfg.mgclip_drift:
            self._previous = [p.detach().clone() for p in params]
            return False
        self.first_epochs = max(epoch, 1)  # epoch.py: the epochs before the one that drifted, at least 1
        if epoch > 0:
            with torch.no_grad():
                for p, kept in zip(params, self._previous, strict=True):
                    p.copy_(kept)
        return True

    @torch.no_grad()
    def _mean_nontarget_logit(self) -> float:
        """The mean over the task's images of their mean non-target logit s cos(f, T) (eval mode; every rank's
        shard under torchrun)."""
        training = self.model.training
        self.model.eval()
        with self.autocast():
            text = self._task_text()
        if len(text) < 2:
            raise ConfigError("mgclip's drift rule needs 2 classes in the first task; set method.mgclip_drift=null")
        total = torch.zeros(2, dtype=torch.float64)
        for images, labels in self._batches:
            with self.autocast():
                logits = self.model.logit_scale() * self.model.image_features(images) @ text.T
            total += nontarget_sum(logits, labels - self.n_old())
        if self.comm is not None:
            total = sum(self.comm.gather(total))
        self.model.train(training)
        return float(total[0] / total[1])

    def after_task(self, t: int, train_batches: Batches) -> dict:
        """The first task's epoch count (when the rule never fired: all of them), then the agent's new rows."""
        info: dict = {}
        if t == 0 and self.cfg.mgclip_drift is not None:
            self.first_epochs = self.first_epochs or len(self.drifts)
            info.update(first_task_epochs=self.first_epochs, nontarget_logit_drift=self.drifts)
        self._batches, self._previous = [], None
        feats, labels = self._task_features(train_batches)
        n_old = self.n_old()
        targets = labels - n_old
        init = class_means(feats, targets, self.n_seen() - n_old)
        gen = torch.Generator().manual_seed(torch.initial_seed() + 4000)  # the engine seeded (seed, task)
        c = self.cfg
        rows, loss = train_agent(
            init, feats, targets, c.mgclip_agent_epochs, c.mgclip_agent_batch_size, c.mgclip_agent_lr, gen
        )
        self.agent = torch.cat([self.agent[:n_old], rows])
        info["agent_loss"] = loss
        return info

    @torch.no_grad()
    def _task_features(self, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image features and stream labels of the task's images, in dataset order, every rank's."""
        self.model.eval()
        feats, labels = [torch.zeros(0, self.model.embed_dim, device=self.device)], [torch.zeros(0).long()]
        for images, y in batches:
            with self.autocast():
                feats.append(self.model.image_features(images).float())
            labels.append(y.long().cpu())
        feats, labels = torch.cat(feats), torch.cat(labels)
        if self.comm is not None:  # every rank's shard, put back in dataset order
            index = torch.tensor(self.comm.shard_indices, dtype=torch.long)
            parts = self.comm.gather((feats.cpu(), labels, index))
            feats, labels, index = (torch.cat(p) for p in zip(*parts, strict=True))
            order = torch.argsort(index)
            feats, labels = feats[order].to(self.device), labels[order]
        return feats, labels.to(self.device)

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def begin_eval(self, t: int) -> None:
        """The seen classes' text and agent rows; the fused prediction once the agent has a row for each."""
        super().begin_eval(t)
        n = self.n_seen(t)
        self._fuse = len(self.agent) >= n > 0
        self._agent_eval = F.normalize(self.agent[:n], dim=-1)

    def use_branch(self, t: int, branch: str) -> None:
        """run / dual: CLIP fused with the visual agent; clip: CLIP alone."""
        self.begin_eval(t)
        if branch == "clip":
            self._fuse = False
        elif branch == "dual" and not self._fuse:
            raise ConfigError(f"mgclip has no visual agent for task {t + 1} yet: use --branch clip")

    @property
    def predicts_by_clip(self) -> bool:
        return not self._fuse

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's probabilities over the seen classes, fused with the visual agent's (see the module docs)."""
        with self.autocast():
            feats = self.model.image_features(images).float()
        probs = F.softmax(float(self.model.logit_scale()) * feats @ self._eval_text.float().T, dim=-1)
        if not self._fuse:
            return probs
        return fuse(probs, feats @ self._agent_eval.T, self.cfg.mgclip_agent_weight)

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        tensors = {"visual_agent": self.agent, "first_task_epochs": torch.tensor([self.first_epochs])}
        return {**super().state_dict(), "tensors": tensors}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        tensors = state.get("tensors") or {}
        missing = {"visual_agent", "first_task_epochs"} - set(tensors)
        if missing:
            raise ValueError(f"the checkpoint holds no MG-CLIP {', '.join(sorted(missing))}")
        self.agent = tensors["visual_agent"].float().to(self.device)
        self.first_epochs = int(tensors["first_task_epochs"][0])

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """The visual agent's rows [seen classes, d] (the fusion weight is in the exported config)."""
        return {"visual_agent": self.agent[: self.n_seen()]}
