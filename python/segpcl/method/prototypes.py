"""Visual prototypes (a thin wrapper on the Rust `PrototypeBank`), anchor-induced transfer, and dual-path
inference.

Prototypes live in the raw visual space v (the visual tower's pooled output before the projection; the paper's)
or in the joint embedding f (`prototype_space=embed`). Dual path (DESIGN §4), with p(x) the image's feature in
the prototype space and P the prototypes, both L2-normalised:
- fusion=logits (paper): l(x, c) = s cos(f, T_c) + beta s_v cos(p, P_c), probabilities softmax(l);
- fusion=probs: (1 - beta) softmax(s cos(f, T)) + beta softmax(s_v cos(p, P)).
Either costs one C x d_p matrix product per image on top of CLIP.

A class without a prototype (not learned yet, or all its training images unreadable) has a zero row in P and is
scored by CLIP alone: its prototype score is the image's mean prototype score over the classes that have one,
not s_v cos(p, 0) = 0 (see dual_path_probs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._core import PrototypeBank


class PrototypeMemory:
    def __init__(self, dim: int):
        self.bank = PrototypeBank(dim)

    def __len__(self) -> int:
        return len(self.bank)

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate class sums and counts of features [N, d] with stream labels [N]."""
        self.bank.update(
            np.ascontiguousarray(features.detach().float().cpu().numpy()),
            np.ascontiguousarray(labels.detach().long().cpu().numpy()),
        )

    def matrix(self, n_classes: int, fallback: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """L2-normalised prototypes [n_classes, d] of classes 0..n_classes-1. A class without one (all its
        training images unreadable, or not learned yet) takes its row of `fallback` when one is given, else a
        zero row, which dual_path_probs reads as "no prototype: score this class by CLIP alone"."""
        if fallback is not None:
            out = F.normalize(fallback[:n_classes].detach().float().clone(), dim=-1)
        else:
            out = torch.zeros(n_classes, self.bank.dim, device=device)
        ids, means = self.bank.means()
        keep = ids < n_classes
        if keep.any():
            rows = torch.from_numpy(ids[keep]).to(out.device)
            out[rows] = F.normalize(torch.from_numpy(means[keep]).to(out.device), dim=-1)
        return out

    def migrate(
        self,
        before: torch.Tensor,
        after: torch.Tensor,
        classes: list[int],
        mode: str = "proximity",
        sigma: float | None = None,
        anchor_targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Move the prototypes of `classes` (those the bank holds) by the anchor drift; returns the shifts.

        sigma None: the median distance between each anchor's teacher feature and its target class's
        prototype (falls back to the median anchor-to-prototype distance without targets).
        """
        classes = [c for c in classes if c in self.bank]
        b = np.ascontiguousarray(before.detach().float().cpu().numpy())
        a = np.ascontiguousarray(after.detach().float().cpu().numpy())
        if len(b) == 0 or not classes:
            return torch.zeros(len(classes), self.bank.dim)
        if sigma is None:
            sigma = self.default_sigma(before, classes, anchor_targets)
        targets = None
        if anchor_targets is not None:
            targets = np.ascontiguousarray(anchor_targets.detach().long().cpu().numpy())
        shifts = self.bank.migrate(b, a, float(sigma), mode=mode, anchor_targets=targets, classes=list(classes))
        return torch.from_numpy(np.asarray(shifts))

    def default_sigma(self, before: torch.Tensor, classes: list[int], anchor_targets: torch.Tensor | None) -> float:
        ids, means = self.bank.means()
        row = {int(c): i for i, c in enumerate(ids)}
        protos = torch.from_numpy(means[[row[c] for c in classes]])
        dist = torch.cdist(before.detach().float().cpu(), protos)
        d = dist.flatten()
        if anchor_targets is not None:
            column = {c: j for j, c in enumerate(classes)}
            own = [(a, column[t]) for a, t in enumerate(anchor_targets.tolist()) if t in column]
            if own:
                anchors, cols = zip(*own, strict=True)
                d = dist[list(anchors), list(cols)]
        return max(float(d.median()), 1e-6)

    def state_dict(self) -> dict:
        return self.bank.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.bank = PrototypeBank.from_state(state)


def dual_path_probs(
    features: torch.Tensor,
    text: torch.Tensor,
    proto_features: torch.Tensor | None,
    prototypes: torch.Tensor | None,
    logit_scale: float,
    proto_scale: float,
    beta: float,
    fusion: str = "logits",
) -> torch.Tensor:
    """Class probabilities [B, C] (see the module docs); beta = 0 or no prototypes is the CLIP path alone.

    features: [B, d] normalised f; proto_features: [B, d_p] image features in the prototype space (normalised
    here); prototypes: [C, d_p] normalised, a zero row for a class without a prototype (PrototypeMemory.matrix).

    A class without a prototype is scored by CLIP alone: its prototype score is replaced by the image's mean
    prototype score over the classes that have one. Why that neutral value: a zero row would score
    s_v cos(p, 0) = 0 while every class with a prototype scores s_v cos(p, P_c), mostly > 0, so such a class
    would lose nearly every comparison (FWT's pre-task accuracy was 0.0 for that reason). With the mean, under
    logit fusion (softmax ignores a constant added to every class) classes without a prototype are ranked
    among themselves by CLIP alone, and against a class with one as if their prototype matched the image as
    well as an average learned class: they win where CLIP prefers them by more than the prototype branch
    prefers that class over the average. Under probability fusion the same filled-in scores enter the
    prototype softmax. Without any prototype row this is the CLIP path alone, for either fusion."""
    clip_logits = logit_scale * features @ text.T
    if prototypes is None or beta == 0:
        return F.softmax(clip_logits, dim=-1)
    known = prototypes.abs().sum(dim=1) > 0
    if not bool(known.any()):
        return F.softmax(clip_logits, dim=-1)
    proto_logits = proto_scale * F.normalize(proto_features, dim=-1) @ prototypes.T
    if not bool(known.all()):
        neutral = proto_logits[:, known].mean(dim=1, keepdim=True)
        proto_logits = torch.where(known, proto_logits, neutral)
    if fusion == "logits":
        return F.softmax(clip_logits + beta * proto_logits, dim=-1)
    return (1 - beta) * F.softmax(clip_logits, dim=-1) + beta * F.softmax(proto_logits, dim=-1)


def prototype_probs(proto_features: torch.Tensor, prototypes: torch.Tensor, proto_scale: float) -> torch.Tensor:
    """The prototype branch alone (nearest class mean by cosine; the `ncm` method)."""
    return F.softmax(proto_scale * F.normalize(proto_features, dim=-1) @ prototypes.T, dim=-1)
