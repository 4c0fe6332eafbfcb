"""Random-class anchors: the control for "does choosing DPGD's seeds matter" (the lora+distill-randomclass row).

For each old class c, k_seed of the new task's training images drawn uniformly at random (not the k_seed most
similar to c's text, as DPGD's per-class seeds are), targeted at c, without PGD: as many anchors per old class
as DPGD makes, only their choice differs. An image may be drawn for several classes, as a DPGD seed may.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from .anchors import AnchorSet, EncodeFn, anchor_set, anchor_statistics


def _top_per_class(keys: torch.Tensor, k_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [C * k], targets [C * k]): for each class (column) in order, the rows of its k largest keys."""
    k = min(k_seed, len(keys))
    rows = torch.topk(keys, k, dim=0).indices  # [k, C]
    targets = torch.arange(keys.shape[1], device=keys.device).repeat_interleave(k)
    return rows.T.reshape(-1), targets


@torch.no_grad()
def random_seeds(
    batches: Iterable[torch.Tensor], n_old: int, k_seed: int, generator: torch.Generator, device, comm=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, positions among the task's readable images, targets), class by class: per old class, k_seed
    images drawn uniformly without replacement. Each (image, class) pair gets an independent uniform key and a
    class takes its k largest keys, so the batches can be streamed keeping only the images still in some
    class's top k (never the whole task). With `comm` the batches are this rank's shard and the candidates of
    every rank are merged onto `device`; the draw is then as random, though not the one a single process
    makes."""
    keep_x = keep_idx = keep_keys = None
    offset = 0
    for x in batches:
        keys = torch.rand(len(x), n_old, generator=generator).to(x.device)
        idx = torch.arange(offset, offset + len(x), device=x.device)
        offset += len(x)
        if keep_x is not None:
            x, idx, keys = torch.cat([keep_x, x]), torch.cat([keep_idx, idx]), torch.cat([keep_keys, keys])
        chosen = torch.unique(_top_per_class(keys, k_seed)[0])
        keep_x, keep_idx, keep_keys = x[chosen], idx[chosen], keys[chosen]
    if comm is not None:
        if keep_idx is not None:
            keep_idx = comm.global_indices(keep_idx)
        keep_x, keep_idx, keep_keys = comm.merge_candidates(keep_x, keep_idx, keep_keys, device)
    if keep_x is None:
        raise ValueError("no images to build anchors from")
    rows, targets = _top_per_class(keep_keys, k_seed)
    return keep_x[rows], keep_idx[rows], targets


def random_anchors(
    encode_image: EncodeFn,
    batches: Iterable[torch.Tensor],
    text_seen: torch.Tensor,
    n_old: int,
    logit_scale: float,
    *,
    k_seed: int,
    generator: torch.Generator,
    autocast=contextlib.nullcontext,
    comm=None,
) -> AnchorSet:
    """Anchors of random new-task images, k_seed per old class, with the frozen teacher's outputs on them
    (`encode_image`, `text_seen`: the teacher's, old classes first)."""
    images, positions, targets = random_seeds(batches, n_old, k_seed, generator, text_seen.device, comm)
    anchors, logits = anchor_set(
        encode_image, images, targets, positions, text_seen, n_old, logit_scale, autocast=autocast
    )
    anchors.stats = anchor_statistics(logits, logits, images, anchors, n_old, n_old)
    return anchors
