"""DPGD: adversarial anchors by dual-targeted PGD against the frozen teacher (DESIGN §4).

Seeds (per_class, the paper's): for each old class c, the k_seed new-task images with the highest
cos(f_T(x), T_c), targeted at c. Each seed is pushed, inside an L-infinity ball of radius eps in [0, 1] pixel
space, towards c in the text space (cross-entropy over the old or all seen classes) and towards c's visual
prototype (1 - cos in the prototype space). Both objectives come from one forward; with `balance` their
gradients are brought to the same per-anchor size at the prototype-space feature (which the text logits are
computed from) before one backward through the tower; gradients are taken with respect to the perturbation
only, and the update is the fused sign step.

An encode function maps images in [0, 1] to (f, p): f the L2-normalised joint embedding and p the
prototype-space feature (the raw visual feature v, or f itself). A function returning f alone means p = f.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..kernels import pgd_step_

EncodeFn = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
Autocast = Callable[[], contextlib.AbstractContextManager]


@dataclass
class AnchorSet:
    """Anchors of one task and the teacher's cached outputs on them."""

    images: torch.Tensor
    """[K, 3, H, W] anchor images in [0, 1]."""
    targets: torch.Tensor
    """[K] target old class c (stream position) of each anchor."""
    teacher_logits: torch.Tensor
    """[K, C_old] s * cos(f_T(a), T_old): the teacher side of ACGD (softmax(./tau) = pi^T)."""
    teacher_features: torch.Tensor
    """[K, d_p] p_T(a): teacher prototype-space features, the 'before' of prototype transfer."""
    seed_indices: torch.Tensor
    """[K] position of each seed among the task's readable training images, in dataset order."""
    stats: dict = field(default_factory=dict)
    """Per-task anchor statistics (see `anchor_statistics`)."""

    def __len__(self) -> int:
        return len(self.targets)


def _encode(encode: EncodeFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = encode(x)
    f, p = out if isinstance(out, tuple) else (out, out)
    return f.float(), p.float()


def select_seeds(features: torch.Tensor, text_old: torch.Tensor, k_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mode: the k_seed images whose best old-class cosine is highest (ties: lower index first), and
    each one's target = that argmax."""
    scores, best = (features.float() @ text_old.float().T).max(dim=1)
    order = torch.sort(-scores, stable=True).indices[: min(k_seed, len(scores))]
    return order, best[order]


def select_seeds_per_class(
    features: torch.Tensor, text_old: torch.Tensor, k_seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mode: for each old class c (in order), its k_seed images by cos(f, T_c), best first (ties:
    lower index). Returns (image indices [C * k], targets [C * k]); an image may seed several classes."""
    scores = features.float() @ text_old.float().T  # [N, C]
    k = min(k_seed, len(scores))
    order = torch.sort(-scores, dim=0, stable=True).indices[:k]  # [k, C]
    targets = torch.arange(scores.shape[1], device=scores.device).repeat_interleave(k)
    return order.T.reshape(-1), targets


def _margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logit of the target minus the best other logit."""
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return target_logit - others.max(dim=1).values


def _unit_rows(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def run_pgd(
    encode_image: EncodeFn,
    x_clean: torch.Tensor,
    targets: torch.Tensor,
    text: torch.Tensor,
    protos: torch.Tensor | None,
    logit_scale: float,
    steps: int,
    eps: float,
    gamma: float,
    lambda_p: float,
    early_stop_margin: float | None = None,
    autocast: Autocast = contextlib.nullcontext,
    balance: bool = False,
) -> torch.Tensor:
    """The perturbation delta after `steps` dual-target PGD steps (zero start).

    text: [K, d] L2-normalised text embeddings of the classes of the cross-entropy (targets index them).
    protos: [C, d_p] L2-normalised prototypes in the encoder's prototype space (ignored when lambda_p == 0).
    balance: scale each objective's gradient at p to unit norm per anchor before weighting by lambda_p.
    """
    delta = torch.zeros_like(x_clean)
    active = torch.ones(len(x_clean), dtype=torch.bool, device=x_clean.device)
    use_visual = lambda_p != 0 and protos is not None
    target_protos = protos[targets].float() if use_visual else None
    for _ in range(steps):
        delta.requires_grad_(True)
        with autocast():
            feats, p = _encode(encode_image, x_clean + delta)
        logits = logit_scale * feats @ text.float().T
        text_loss = F.cross_entropy(logits, targets, reduction="sum")
        if not use_visual:
            (grad,) = torch.autograd.grad(text_loss, delta)
        else:
            vis_loss = (1 - (F.normalize(p, dim=-1) * target_protos).sum(dim=1)).sum()
            if balance:
                g_text = torch.autograd.grad(text_loss, p, retain_graph=True)[0]
                g_vis = torch.autograd.grad(vis_loss, p, retain_graph=True)[0]
                (grad,) = torch.autograd.grad(p, delta, grad_outputs=_unit_rows(g_text) + lambda_p * _unit_rows(g_vis))
            else:
                (grad,) = torch.autograd.grad(text_loss + lambda_p * vis_loss, delta)
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
def batched_encode(
    encode_image: EncodeFn, images: torch.Tensor, batch_size: int = 256, autocast: Autocast = contextlib.nullcontext
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (f, p) of images [N, 3, H, W], encoded batch_size at a time (under autocast)."""
    fs, ps = [], []
    for x in _chunks(images, batch_size):
        with autocast():
            f, p = _encode(encode_image, x)
        fs.append(f)
        ps.append(p)
    return torch.cat(fs), torch.cat(ps)


@torch.no_grad()
def stream_seeds(
    encode_image: EncodeFn,
    batches: Iterable[torch.Tensor],
    text_old: torch.Tensor,
    k_seed: int,
    per_class: bool,
    autocast,
    comm=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seed selection over a stream of image batches, keeping only the images that can still be chosen.
    Returns (seed images, seed indices, targets) in the order select_seeds(_per_class) gives.

    With `comm` (engine/distributed.py) the batches are this rank's shard: every rank's candidates are merged
    (by dataset index) before the final selection, which is then the one a single process makes."""
    keep_x = keep_idx = keep_feat = None
    offset = 0
    for x in batches:
        with autocast():
            feats, _ = _encode(encode_image, x)
        idx = torch.arange(offset, offset + len(x), device=x.device)
        offset += len(x)
        if keep_x is not None:  # kept candidates precede the batch's larger indices: index order holds
            x, idx, feats = torch.cat([keep_x, x]), torch.cat([keep_idx, idx]), torch.cat([keep_feat, feats])
        if per_class:
            chosen, _ = select_seeds_per_class(feats, text_old, k_seed)
            chosen = torch.unique(chosen)  # sorted: the kept set stays in index order
        else:
            chosen, _ = select_seeds(feats, text_old, k_seed)
            chosen = torch.sort(chosen).values
        keep_x, keep_idx, keep_feat = x[chosen], idx[chosen], feats[chosen]
    if comm is not None:
        if keep_idx is not None:
            keep_idx = comm.global_indices(keep_idx)
        keep_x, keep_idx, keep_feat = comm.merge_candidates(keep_x, keep_idx, keep_feat, text_old.device)
    if keep_x is None:
        raise ValueError("no images to build anchors from")
    select = select_seeds_per_class if per_class else select_seeds
    rows, targets = select(keep_feat, text_old, k_seed)
    return keep_x[rows], keep_idx[rows], targets


@torch.no_grad()
def anchor_set(
    encode_image: EncodeFn,
    images: torch.Tensor,
    targets: torch.Tensor,
    seed_indices: torch.Tensor,
    text_seen: torch.Tensor,
    n_old: int,
    logit_scale: float,
    batch_size: int = 64,
    autocast: Autocast = contextlib.nullcontext,
) -> tuple[AnchorSet, torch.Tensor]:
    """An AnchorSet of `images` with the teacher's logits over the old classes and its prototype features,
    and the teacher's logits over all seen classes [K, C_seen]."""
    feats, p = batched_encode(encode_image, images, batch_size, autocast)
    logits = logit_scale * feats @ text_seen.float().T
    anchors = AnchorSet(
        images=images,
        targets=targets,
        teacher_logits=logits[:, :n_old].contiguous(),
        teacher_features=p,
        seed_indices=seed_indices,
    )
    return anchors, logits


@torch.no_grad()
def anchor_statistics(
    seed_logits: torch.Tensor,
    anchor_logits: torch.Tensor,
    seeds: torch.Tensor,
    anchors: AnchorSet,
    n_pgd_classes: int,
    n_old: int,
) -> dict:
    """How far anchors moved and whether they reached their target, for the task log.

    *_logits: the teacher's logits over all seen classes (old first) at the seeds and the anchors.
    p_target_*: the teacher's mean softmax probability of the target over the PGD classes; crossed_*: the share
    whose argmax over all seen classes is the target."""
    t = anchors.targets
    move = (anchors.images - seeds).flatten(1).abs().amax(dim=1)
    per_class = torch.bincount(t, minlength=n_old)[:n_old].float()

    def p_target(logits: torch.Tensor) -> float:
        return float(F.softmax(logits[:, :n_pgd_classes].float(), dim=1).gather(1, t[:, None]).mean())

    def crossed(logits: torch.Tensor) -> float:
        return float((logits.argmax(dim=1) == t).float().mean())

    return {
        "anchors": len(t),
        "linf_move_mean": float(move.mean()),
        "linf_move_max": float(move.max()),
        "p_target_seeds": p_target(seed_logits),
        "p_target_anchors": p_target(anchor_logits),
        "crossed_seeds": crossed(seed_logits),
        "crossed_anchors": crossed(anchor_logits),
        "anchors_per_old_class_min": float(per_class.min()),
        "anchors_per_old_class_mean": float(per_class.mean()),
        "anchors_per_old_class_max": float(per_class.max()),
    }


def pgd_settings(cfg) -> dict:
    """build_anchors' keyword settings from a run's method section (seeds, PGD steps, budget and balance)."""
    return {
        "k_seed": cfg.k_seed,
        "steps": cfg.pgd_steps,
        "eps": cfg.pgd_eps,
        "gamma": cfg.pgd_gamma,
        "per_class": cfg.seed_mode == "per_class",
        "pgd_classes": cfg.pgd_classes,
        "balance": cfg.pgd_balance,
        "early_stop_margin": cfg.early_stop_margin,
    }


def build_anchors(
    encode_image: EncodeFn,
    batches: Iterable[torch.Tensor],
    text_seen: torch.Tensor,
    n_old: int,
    protos_old: torch.Tensor | None,
    logit_scale: float,
    *,
    k_seed: int,
    steps: int,
    eps: float,
    gamma: float,
    lambda_p: float,
    per_class: bool = True,
    pgd_classes: str = "old",
    pgd: bool = True,
    balance: bool = True,
    early_stop_margin: float | None = None,
    batch_size: int = 64,
    autocast: Autocast = contextlib.nullcontext,
    comm=None,
    seed_scan=None,
) -> AnchorSet:
    """Anchors from the new-task image batches (unshuffled, on the teacher's device) with the frozen teacher.

    text_seen: [C_seen, d] teacher text embeddings, old classes first. Only the images that can still be chosen
    as seeds are kept in memory, never the whole task. pgd=False makes the seeds themselves the anchors.

    comm (several processes, engine/distributed.py): `batches` is this rank's shard; the seeds are merged across
    ranks, chunk i of the PGD runs on rank i % N and the chunks are gathered: every rank returns the anchor set
    one process would (seed_indices are then dataset indices, equal unless images were unreadable)."""
    text_old = text_seen[:n_old]
    seed_scan = seed_scan or stream_seeds  # the overhead bench passes a timed one
    seeds, seed_idx, targets = seed_scan(encode_image, batches, text_old, k_seed, per_class, autocast, comm)
    text_pgd = text_old if pgd_classes == "old" else text_seen
    if pgd:
        parts = []
        for i, (x, y) in enumerate(zip(_chunks(seeds, batch_size), _chunks(targets, batch_size), strict=True)):
            if comm is not None and i % comm.world != comm.rank:
                parts.append(None)
                continue
            delta = run_pgd(
                encode_image,
                x,
                y,
                text_pgd,
                protos_old,
                logit_scale,
                steps,
                eps,
                gamma,
                lambda_p,
                early_stop_margin,
                autocast,
                balance,
            )
            parts.append((x + delta).clamp_(0, 1))
        if comm is not None:
            mine = {i: p for i, p in enumerate(parts) if p is not None}
            parts = comm.gather_chunks(mine, len(parts), seeds.device)
        images = torch.cat(parts)
    else:
        images = seeds
    anchors, anchor_logits = anchor_set(
        encode_image, images, targets, seed_idx, text_seen, n_old, logit_scale, batch_size, autocast
    )
    if pgd:
        seed_f, _ = batched_encode(encode_image, seeds, batch_size, autocast)
        seed_logits = logit_scale * seed_f @ text_seen.float().T
    else:
        seed_logits = anchor_logits
    anchors.stats = anchor_statistics(seed_logits, anchor_logits, seeds, anchors, len(text_pgd), n_old)
    return anchors
