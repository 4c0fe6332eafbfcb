"""Fused row-softmax KL divergence for anchor-guided distillation (ACGD), forward and backward.

    loss = 1/N * sum_rows KL(softmax(teacher / tau) || softmax(student / tau))

i.e. ``F.kl_div(F.log_softmax(student / tau, -1), F.softmax(teacher / tau, -1), reduction="batchmean")``
(no tau^2 factor: callers scale). Rows [N, C] with any C: the kernel makes two passes over column blocks
(an online max / sum-of-exponentials pass, then the loss-and-gradient pass), one program per row, fp32
accumulation whatever the storage dtype. Teacher probabilities that underflow to 0 contribute 0 (xlogy
semantics), so logits of +-1e4 give finite results. The gradient w.r.t. the student logits,
(softmax(student / tau) - softmax(teacher / tau)) / (tau * N), is computed in the forward pass and saved
(Liger-style); backward only multiplies it by grad_output. The teacher never gets a gradient.

Contents (Liger-Kernel layout): the Triton kernel, its launcher, the ``torch.autograd.Function``, the
pure-torch reference (:func:`anchor_kl_reference`) it is tested against, and the dispatched entry point
:func:`anchor_kl`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from segpcl.kernels.dispatch import note_kernel_defined, use_triton

try:  # guarded: the package must import and work without triton
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - exercised only where triton is missing or broken
    triton = None
    tl = None

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_BLOCK = 4096  # rows wider than this are processed in column blocks of this size


if triton is not None:

    @triton.jit
    def _anchor_kl_fwd_kernel(
        s_ptr,  # [N, C] student logits, unit column stride, row stride s_stride, fp32/bf16/fp16
        t_ptr,  # [N, C] teacher logits, unit column stride, row stride t_stride, fp32/bf16/fp16
        loss_ptr,  # [N] fp32 out: KL of each row, already divided by N
        grad_ptr,  # [N, C] out: d loss / d student, contiguous, student's dtype; written if COMPUTE_GRAD
        s_stride,  # int: row stride of s_ptr (elements)
        t_stride,  # int: row stride of t_ptr (elements)
        C,  # int: number of columns (classes)
        inv_tau,  # fp32: 1 / tau
        inv_n,  # fp32: 1 / N (batch mean)
        COMPUTE_GRAD: tl.constexpr,
        SINGLE_BLOCK: tl.constexpr,  # C <= BLOCK_C: the row is read once and kept in registers
        BLOCK_C: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        s_row = s_ptr + row * s_stride
        t_row = t_ptr + row * t_stride
        g_row = grad_ptr + row * C
        neg_inf = float("-inf")

        if SINGLE_BLOCK:
            cols = tl.arange(0, BLOCK_C)
            mask = cols < C
            s = tl.load(s_row + cols, mask=mask, other=neg_inf).to(tl.float32) * inv_tau
            t = tl.load(t_row + cols, mask=mask, other=neg_inf).to(tl.float32) * inv_tau
            m_s = tl.max(s, axis=0)
            m_t = tl.max(t, axis=0)
            log_z_s = m_s + tl.log(tl.sum(tl.exp(s - m_s), axis=0))
            log_z_t = m_t + tl.log(tl.sum(tl.exp(t - m_t), axis=0))
            log_q = s - log_z_s
            log_p = t - log_z_t
            p = tl.exp(log_p)
            # xlogy: where p = 0 (padding, -inf or underflowing teacher logits) the term is 0; zero both logs
            # there first, so that no -inf - -inf or 0 * inf is ever formed
            has_p = p > 0.0
            kl = tl.sum(p * (tl.where(has_p, log_p, 0.0) - tl.where(has_p, log_q, 0.0)), axis=0)
            if COMPUTE_GRAD:
                g = (tl.exp(log_q) - p) * (inv_tau * inv_n)
                tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)
        else:
            # pass 1: online max and sum of exponentials of both rows
            m_s = neg_inf
            m_t = neg_inf
            z_s = 0.0
            z_t = 0.0
            for start in range(0, C, BLOCK_C):
                cols = start + tl.arange(0, BLOCK_C)
                mask = cols < C
                s = tl.load(s_row + cols, mask=mask, other=neg_inf).to(tl.float32) * inv_tau
                t = tl.load(t_row + cols, mask=mask, other=neg_inf).to(tl.float32) * inv_tau
                new_m_s = tl.maximum(m_s, tl.max(s, axis=0))
                new_m_t = tl.maximum(m_t, tl.max(t, axis=0))
                # shift by 0 while everything seen is -inf, so that -inf - -inf never makes a NaN
                sh_s = tl.where(new_m_s == neg_inf, 0.0, new_m_s)
                sh_t = tl.where(new_m_t == neg_inf, 0.0, new_m_t)
                z_s = z_s * tl.exp(m_s - sh_s) + tl.sum(tl.exp(s - sh_s), axis=0)
                z_t = z_t * tl.exp(m_t - sh_t) + tl.sum(tl.exp(t - sh_t), axis=0)
                m_s = new_m_s
                m_t = new_m_t
            log_z_s = m_s + tl.log(z_s)
            log_z_t = m_t + tl.log(z_t)
            # pass 2: loss and gradient
            acc = tl.zeros([BLOCK_C], dtype=tl.float32)
            for start in range(0, C, BLOCK_C):
                cols = start + tl.arange(0, BLOCK_C)
                mask = cols < C
                s = tl.load(s_row + cols, mask=mask, other=neg_inf).to(tl.float32) * inv_tau
                t = tl.load(t_row + cols, mask=mask, other=neg_inf).to(tl.float32) * inv_tau
                log_q = s - log_z_s
                log_p = t - log_z_t
                p = tl.exp(log_p)
                has_p = p > 0.0
                acc += p * (tl.where(has_p, log_p, 0.0) - tl.where(has_p, log_q, 0.0))
                if COMPUTE_GRAD:
                    g = (tl.exp(log_q) - p) * (inv_tau * inv_n)
                    tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)
            kl = tl.sum(acc, axis=0)

        tl.store(loss_ptr + row, kl * inv_n)

    note_kernel_defined(_anchor_kl_fwd_kernel)  # tells dispatch whether Triton built it for the interpreter


# --------------------------------------------------------------------------------------------------
# validation shared by every path


def _validate(student, teacher, tau) -> None:
    for name, t in (("student_logits", student), ("teacher_logits", teacher)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"anchor_kl: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"anchor_kl: {name} has dtype {t.dtype}; supported: float32, bfloat16, float16")
        if t.dim() != 2:
            raise ValueError(f"anchor_kl: {name} must be 2-D [N, C], got shape {tuple(t.shape)}")
    if student.shape != teacher.shape:
        raise ValueError(
            "anchor_kl: student_logits and teacher_logits must have the same shape [N, C], got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if student.shape[1] == 0:
        raise ValueError("anchor_kl: logits need at least one column (class), got C = 0")
    if student.device != teacher.device:
        raise ValueError(f"anchor_kl: student_logits is on {student.device} but teacher_logits is on {teacher.device}")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (0.0 < tau < float("inf")):
        raise ValueError(f"anchor_kl: tau must be a finite number > 0, got {tau!r}")


def _empty_loss(student: torch.Tensor) -> torch.Tensor:
    """The loss of zero rows: 0, still connected to ``student`` so that its gradient is a zero-size zero."""
    return student.float().sum() * 0.0


# --------------------------------------------------------------------------------------------------
# pure-torch reference


def anchor_kl_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0):
    """``F.kl_div(F.log_softmax(s / tau), F.softmax(t / tau), reduction="batchmean")`` in fp32.

    The teacher is detached (it gets no gradient, as in the kernel); 0 rows give 0.
    """
    _validate(student_logits, teacher_logits, tau)
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    s = student_logits.float() / tau
    t = teacher_logits.detach().float() / tau
    return F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1), reduction="batchmean")


# --------------------------------------------------------------------------------------------------
# Triton launcher and autograd.Function


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _anchor_kl_forward(student, teacher, tau: float, compute_grad: bool, block: int | None = None):
    """Runs the kernel; returns (loss fp32 scalar, grad [N, C] in the student's dtype or None)."""
    n, c = student.shape
    s = _rows(student.detach())
    t = _rows(teacher.detach())
    row_loss = torch.empty(n, dtype=torch.float32, device=s.device)
    grad = torch.empty((n, c), dtype=student.dtype, device=s.device) if compute_grad else None
    block_c = block if block is not None else min(_MAX_BLOCK, triton.next_power_of_2(c))
    block_c = max(16, triton.next_power_of_2(block_c))
    num_warps = 1 if block_c <= 256 else 2 if block_c <= 512 else 4 if block_c <= 2048 else 8
    _anchor_kl_fwd_kernel[(n,)](
        s,
        t,
        row_loss,
        grad if grad is not None else row_loss,
        s.stride(0),
        t.stride(0),
        c,
        1.0 / float(tau),
        1.0 / float(n),
        COMPUTE_GRAD=compute_grad,
        SINGLE_BLOCK=c <= block_c,
        BLOCK_C=block_c,
        num_warps=num_warps,
    )
    return row_loss.sum(), grad


class AnchorKLFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernel: gradient for the student logits only."""

    @staticmethod
    def forward(ctx, student, teacher, tau, block=None):
        loss, grad = _anchor_kl_forward(student, teacher, tau, compute_grad=True, block=block)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None


def anchor_kl_triton(student_logits, teacher_logits, tau: float = 1.0, *, block: int | None = None):
    """The fused kernel (no dispatch); ``block`` forces the column block size (tests use it)."""
    _validate(student_logits, teacher_logits, tau)
    if triton is None:
        raise RuntimeError("anchor_kl_triton needs triton")
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    if torch.is_grad_enabled() and student_logits.requires_grad:
        return AnchorKLFunction.apply(student_logits, teacher_logits, float(tau), block)
    loss, _ = _anchor_kl_forward(student_logits, teacher_logits, tau, compute_grad=False, block=block)
    return loss


# --------------------------------------------------------------------------------------------------
# public, dispatched entry point


def anchor_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Batch-mean KL(softmax(teacher / tau) || softmax(student / tau)) over rows, as an fp32 scalar.

    Args:
        student_logits: [N, C] (fp32, bf16 or fp16); gets a gradient in its own dtype.
        teacher_logits: [N, C], any of those dtypes; never gets a gradient.
        tau: temperature > 0. No tau^2 factor is applied.

    Returns:
        fp32 scalar (0 for N = 0). Raises ValueError on mismatched or non-2-D shapes, bad dtypes or devices.
    """
    if use_triton(student_logits):
        return anchor_kl_triton(student_logits, teacher_logits, tau)
    return anchor_kl_reference(student_logits, teacher_logits, tau)
