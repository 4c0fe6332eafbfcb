"""ACGD: anchor-guided cross-modal geometry distillation over old classes on anchors:
tau^2 * mean over anchors of KL(softmax(l_T / tau) || softmax(l_S / tau)) (paper: tau = 20). The tau^2 factor
keeps the gradient's size independent of the temperature (as in Hinton et al.'s distillation).

`KLFn(student_logits, teacher_logits, tau) -> scalar batch-mean KL` is the function interface; the default is
the dispatched fused kernel (Triton on CUDA, the torch reference elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

KLFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def acgd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0, kl_fn: KLFn | None = None
) -> torch.Tensor:
    """tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)), mean over anchors.

    student_logits, teacher_logits: [A, C_old] = s * cos(image features, old-class text embeddings).
    """
    if kl_fn is None:
        from ..kernels import anchor_kl as kl_fn
    return tau * tau * kl_fn(student_logits, teacher_logits.detach(), tau)
