"""DPGD: adversarial anchors by dual-targeted PGD against the frozen teacher (DESIGN §4).

Seeds are the new-task images most similar to an old class's text embedding; each is pushed, within an
L-infinity ball of radius eps in [0, 1] pixel space, towards its most similar old class c* in the text space
(CE over old classes) and towards c*'s visual prototype (1 - cos). Gradients are taken with respect to the
perturbation only, both objectives come from one forward pass, and the update is the fused sign step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels import pgd_step_

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AnchorSet:
    """Anchors of one task and the teacher's cached outputs on them."""

    images: torch.Tensor
    """[K, 3, H, W] anchor images in [0, 1]."""
    targets: torch.Tensor
    """[K] target old class c* (stream position) of each anchor."""
    teacher_logits: torch.Tensor
    """[K, C_old] s * cos(f_T(a), T_old): the teacher side of ACGD (softmax(./tau) = p^T)."""
    teacher_features: torch.Tensor
    """[K, d] g_T(a): teacher visual features, the 'before' of prototype migration."""
    seed_indices: torch.Tensor
    """[K] position of each seed among the task's readable training images, in dataset order."""

    def __len__(self) -> int:
        return len(self.targets)


def select_seeds(features: torch.Tensor, text_old: torch.Tensor, k_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the k_seed images whose best old-class cosine is highest (ties: lower index first),
    and each one's target class c* = that argmax."""
    scores, best = (features.float() @ text_old.float().T).max(dim=1)
    order = torch.sort(-scores, stable=True).indices[: min(k_seed, len(scores))]
    return order, best[order]


def _margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logit of the target minus the best other logit."""
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return target_logit - others.max(dim=1).values


def run_pgd(
    encode_image: EncodeFn,
    x_clean: torch.Tensor,
    targets: torch.Tensor,
    text_old: torch.Tensor,
    protos_old: torch.Tensor | None,
    logit_scale: float,
    steps: int,
    eps: float,
    gamma: float,
    lambda_p: float,
    early_stop_margin: float | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """The perturbation delta after `steps` dual-target PGD steps (zero start).

    encode_image maps images in [0, 1] to L2-normalised features. protos_old holds L2-normalised old
    visual prototypes [C_old, d] (ignored when lambda_p == 0).
    """
    delta = torch.zeros_like(x_clean)
    active = torch.ones(len(x_clean), dtype=torch.bool, device=x_clean.device)
    use_visual = lambda_p != 0 and protos_old is not None
    target_protos = protos_old[targets] if use_visual else None
    for _ in range(steps):
        delta.requires_grad_(True)
        with autocast():
            feats = encode_image(x_clean + delta)
        feats = feats.float()
        logits = logit_scale * feats @ text_old.float().T
        loss = F.cross_entropy(logits, targets, reduction="sum")
        if use_visual:
            loss = loss + lambda_p * (1 - (feats * target_protos).sum(dim=1)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach()
        if early_stop_margin is not None:
            active &= _margin(logits.detach(), targets) < early_stop_margin
            if not bool(active.any()):
                break
        pgd_step_(x_clean, delta, grad, eps, gamma, active=None if early_stop_margin is None else active)
    return delta.detach()


def _chunks(t: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [t[i : i + size] for i in range(0, len(t), size)]


@torch.no_grad()
def batched_features(
    encode_image: EncodeFn,
    images: torch.Tensor,
    batch_size: int = 256,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """fp32 features of images [N, 3, H, W], encoded batch_size at a time (under autocast)."""
    out = []
    for x in _chunks(images, batch_size):
        with autocast():
            out.append(encode_image(x).float())
    return torch.cat(out)


@torch.no_grad()
def _stream_seeds(
    encode_image: EncodeFn, batches: Iterable[torch.Tensor], text_old: torch.Tensor, k_seed: int, autocast
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """select_seeds over a stream of image batches, keeping only the running top k_seed images.
    Returns (seed images, seed indices, targets) in the order select_seeds would give."""
    keep_x = keep_idx = keep_score = keep_tgt = None
    offset = 0
    for x in batches:
        with autocast():
            feats = encode_image(x).float()
        score, tgt = (feats @ text_old.float().T).max(dim=1)
        idx = torch.arange(offset, offset + len(x), device=x.device)
        offset += len(x)
        if keep_x is not None:
            x, idx = torch.cat([keep_x, x]), torch.cat([keep_idx, idx])
            score, tgt = torch.cat([keep_score, score]), torch.cat([keep_tgt, tgt])
        # kept candidates are sorted by (-score, index) and all precede the new batch's larger indices,
        # so a stable sort on -score keeps ties in index order, as select_seeds does
        top = torch.sort(-score, stable=True).indices[:k_seed]
        keep_x, keep_idx, keep_score, keep_tgt = x[top], idx[top], score[top], tgt[top]
    if keep_x is None:
        raise ValueError("no images to build anchors from")
    return keep_x, keep_idx, keep_tgt


def build_anchors(
    encode_image: EncodeFn,
    batches: Iterable[torch.Tensor],
    text_old: torch.Tensor,
    protos_old: torch.Tensor | None,
    logit_scale: float,
    *,
    k_seed: int,
    steps: int,
    eps: float,
    gamma: float,
    lambda_p: float,
    early_stop_margin: float | None = None,
    batch_size: int = 64,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> AnchorSet:
    """Anchors from the new-task image batches (unshuffled, on the teacher's device) with the frozen teacher.

    Only the running top k_seed seed candidates are kept in memory, never the whole task."""
    seeds, seed_idx, targets = _stream_seeds(encode_image, batches, text_old, k_seed, autocast)
    anchors = []
    for x, y in zip(_chunks(seeds, batch_size), _chunks(targets, batch_size), strict=True):
        delta = run_pgd(
            encode_image,
            x,
            y,
            text_old,
            protos_old,
            logit_scale,
            steps,
            eps,
            gamma,
            lambda_p,
            early_stop_margin,
            autocast,
        )
        anchors.append((x + delta).clamp_(0, 1))
    anchor_images = torch.cat(anchors)
    anchor_feats = batched_features(encode_image, anchor_images, batch_size, autocast)
    return AnchorSet(
        images=anchor_images,
        targets=targets,
        teacher_logits=logit_scale * anchor_feats @ text_old.float().T,
        teacher_features=anchor_feats,
        seed_indices=seed_idx,
    )
