"""Fused signed-gradient PGD step with L-inf projection and valid-pixel clamp (one pass over memory).

    delta' = clamp(delta - step_size * sign(grad), -eps, eps)
    delta' = clamp(x_clean + delta', 0, 1) - x_clean

per sample, for inputs of shape [B, ...]. ``eps`` and ``step_size`` are floats or per-sample tensors [B];
``active`` (bool [B], optional) freezes the samples where it is False (their delta is returned unchanged).
Arithmetic is fp32 whatever the storage dtype (fp32, bf16, fp16); the result is stored in delta's dtype.
sign(0) = 0, and a NaN gradient entry counts as 0 (no step) in both implementations.

The eager sequence (sign, mul, sub, clamp, add, clamp, sub) reads and writes the [B, ...] tensor about 16
times; the kernel reads x_clean, delta and grad once and writes delta once.

Contents (Liger-Kernel layout): the Triton kernel, its launcher, the pure-torch reference
(:func:`pgd_step_reference`) it is tested against, and the public, dispatched entry points
:func:`pgd_step` and :func:`pgd_step_`. There is no autograd.Function: the update is a no-grad operation.
"""

from __future__ import annotations

import torch

from segpcl.kernels.dispatch import note_kernel_defined, use_triton

try:  # guarded: the package must import and work without triton
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - exercised only where triton is missing or broken
    triton = None
    tl = None

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_BLOCK = 4096
_NUM_WARPS = 8


if triton is not None:

    @triton.jit
    def _pgd_step_kernel(
        x_ptr,  # [B, M] clean input x_clean, contiguous, fp32/bf16/fp16
        delta_ptr,  # [B, M] current perturbation, contiguous, fp32/bf16/fp16
        grad_ptr,  # [B, M] gradient of the loss w.r.t. delta, contiguous, fp32/bf16/fp16
        out_ptr,  # [B, M] new perturbation, contiguous, delta's dtype (may alias delta_ptr)
        eps_ptr,  # [B] fp32 per-sample radius; read only if EPS_PER_SAMPLE
        step_ptr,  # [B] fp32 per-sample step size; read only if STEP_PER_SAMPLE
        active_ptr,  # [B] uint8 per-sample mask (0 = frozen); read only if HAS_ACTIVE
        eps_scalar,  # fp32 radius when not EPS_PER_SAMPLE
        step_scalar,  # fp32 step size when not STEP_PER_SAMPLE
        M,  # int: elements per sample
        blocks_per_sample,  # int: cdiv(M, BLOCK)
        EPS_PER_SAMPLE: tl.constexpr,
        STEP_PER_SAMPLE: tl.constexpr,
        HAS_ACTIVE: tl.constexpr,
        SKIP_INACTIVE: tl.constexpr,  # in place: frozen samples are neither read nor written
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = pid // blocks_per_sample  # sample index; a block never straddles two samples
        blk = pid % blocks_per_sample
        offs = blk * BLOCK + tl.arange(0, BLOCK)
        mask = offs < M
        base = b.to(tl.int64) * M

        if EPS_PER_SAMPLE:
            eps = tl.load(eps_ptr + b).to(tl.float32)
        else:
            eps = eps_scalar
        if STEP_PER_SAMPLE:
            step = tl.load(step_ptr + b).to(tl.float32)
        else:
            step = step_scalar

        if HAS_ACTIVE:
            act = tl.load(active_ptr + b) != 0
            if SKIP_INACTIVE:
                mask = mask & act

        d = tl.load(delta_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(grad_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)

        sgn = tl.where(g > 0.0, 1.0, tl.where(g < 0.0, -1.0, 0.0))  # NaN -> 0
        new = d - step * sgn
        new = tl.minimum(tl.maximum(new, -eps), eps)
        new = tl.minimum(tl.maximum(x + new, 0.0), 1.0) - x
        if HAS_ACTIVE:
            if not SKIP_INACTIVE:
                new = tl.where(act, new, d)
        tl.store(out_ptr + base + offs, new.to(out_ptr.dtype.element_ty), mask=mask)

    note_kernel_defined(_pgd_step_kernel)  # tells dispatch whether Triton built it for the interpreter


# --------------------------------------------------------------------------------------------------
# validation shared by every path


def _check_scalar_or_per_sample(name: str, value, batch: int, device: torch.device) -> None:
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != batch):
            raise ValueError(
                f"pgd_step: {name} must be a float or a tensor of shape [B]=[{batch}], got shape {tuple(value.shape)}"
            )
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"pgd_step: {name} must be a real number tensor, got dtype {value.dtype}")
        if value.device != device:
            raise ValueError(f"pgd_step: {name} is on {value.device} but delta is on {device}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"pgd_step: {name} must be a float or a tensor of shape [B], got {type(value).__name__}")
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"pgd_step: {name} must be a finite number >= 0, got {value}")


def _validate(x_clean, delta, grad, eps, step_size, active) -> None:
    for name, t in (("x_clean", x_clean), ("delta", delta), ("grad", grad)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"pgd_step: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"pgd_step: {name} has dtype {t.dtype}; supported: float32, bfloat16, float16")
    if delta.dim() < 1:
        raise ValueError("pgd_step: inputs must have a leading batch dimension [B, ...], got a 0-d tensor")
    if x_clean.shape != delta.shape or grad.shape != delta.shape:
        raise ValueError(
            "pgd_step: x_clean, delta and grad must have the same shape, got "
            f"{tuple(x_clean.shape)}, {tuple(delta.shape)}, {tuple(grad.shape)}"
        )
    if x_clean.device != delta.device or grad.device != delta.device:
        raise ValueError(
            f"pgd_step: x_clean, delta and grad must be on one device, got {x_clean.device}, "
            f"{delta.device}, {grad.device}"
        )
    batch = delta.shape[0]
    _check_scalar_or_per_sample("eps", eps, batch, delta.device)
    _check_scalar_or_per_sample("step_size", step_size, batch, delta.device)
    if active is not None:
        if not isinstance(active, torch.Tensor) or active.dtype != torch.bool:
            got = active.dtype if isinstance(active, torch.Tensor) else type(active).__name__
            raise ValueError(f"pgd_step: active must be a bool tensor of shape [B]=[{batch}], got {got}")
        if active.shape != (batch,):
            raise ValueError(f"pgd_step: active must have shape [B]=[{batch}], got {tuple(active.shape)}")
        if active.device != delta.device:
            raise ValueError(f"pgd_step: active is on {active.device} but delta is on {delta.device}")


def _per_sample_fp32(value, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float32).expand(batch).contiguous()
    return torch.full((batch,), float(value), dtype=torch.float32, device=device)


# --------------------------------------------------------------------------------------------------
# pure-torch reference


def pgd_step_reference(
    x_clean: torch.Tensor,
    delta: torch.Tensor,
    grad: torch.Tensor,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """The eager torch sequence the kernel must match; returns a new tensor in delta's dtype."""
    _validate(x_clean, delta, grad, eps, step_size, active)
    with torch.no_grad():
        batch = delta.shape[0]
        bshape = (batch,) + (1,) * (delta.dim() - 1)
        eps_t = _per_sample_fp32(eps, batch, delta.device).view(bshape)
        step_t = _per_sample_fp32(step_size, batch, delta.device).view(bshape)
        d = delta.detach().float()
        x = x_clean.detach().float()
        sgn = torch.sign(grad.detach().float()).nan_to_num_(0.0)
        new = torch.minimum(torch.maximum(d - step_t * sgn, -eps_t), eps_t)
        new = torch.clamp(x + new, 0.0, 1.0) - x
        if active is not None:
            new = torch.where(active.view(bshape), new, d)
        return new.to(delta.dtype)


# --------------------------------------------------------------------------------------------------
# Triton launcher


def _launch(x_clean, delta, grad, out, eps, step_size, active, skip_inactive: bool, block: int) -> None:
    """Runs the kernel over contiguous x_clean, delta, grad, out of one shape [B, ...]."""
    batch = delta.shape[0]
    m = delta.numel() // batch if batch else 0
    if batch == 0 or m == 0:
        return
    eps_t = _per_sample_fp32(eps, batch, delta.device) if isinstance(eps, torch.Tensor) else None
    step_t = _per_sample_fp32(step_size, batch, delta.device) if isinstance(step_size, torch.Tensor) else None
    act_t = active.contiguous().view(torch.uint8) if active is not None else None
    block = min(block, max(16, triton.next_power_of_2(m)))
    blocks_per_sample = triton.cdiv(m, block)
    grid = (batch * blocks_per_sample,)
    _pgd_step_kernel[grid](
        x_clean,
        delta,
        grad,
        out,
        eps_t if eps_t is not None else out,
        step_t if step_t is not None else out,
        act_t if act_t is not None else out,
        float(eps) if eps_t is None else 0.0,
        float(step_size) if step_t is None else 0.0,
        m,
        blocks_per_sample,
        EPS_PER_SAMPLE=eps_t is not None,
        STEP_PER_SAMPLE=step_t is not None,
        HAS_ACTIVE=act_t is not None,
        SKIP_INACTIVE=skip_inactive,
        BLOCK=block,
        num_warps=_NUM_WARPS if block >= 2048 else 4,
    )


def pgd_step_triton(x_clean, delta, grad, eps, step_size, active=None, *, block: int = _BLOCK) -> torch.Tensor:
    """Out-of-place Triton step (no dispatch): returns a new contiguous tensor in delta's dtype."""
    _validate(x_clean, delta, grad, eps, step_size, active)
    if triton is None:
        raise RuntimeError("pgd_step_triton needs triton")
    with torch.no_grad():
        x_c = x_clean.detach().contiguous()
        d_c = delta.detach().contiguous()
        g_c = grad.detach().contiguous()
        out = torch.empty_like(d_c, memory_format=torch.contiguous_format)
        _launch(x_c, d_c, g_c, out, eps, step_size, active, skip_inactive=False, block=block)
    return out


def pgd_step_triton_(x_clean, delta, grad, eps, step_size, active=None, *, block: int = _BLOCK) -> torch.Tensor:
    """In-place Triton step (no dispatch): writes into ``delta`` and returns it."""
    _validate(x_clean, delta, grad, eps, step_size, active)
    if triton is None:
        raise RuntimeError("pgd_step_triton_ needs triton")
    with torch.no_grad():
        x_c = x_clean.detach().contiguous()
        g_c = grad.detach().contiguous()
        if delta.is_contiguous():
            _launch(x_c, delta.detach(), g_c, delta.detach(), eps, step_size, active, True, block)
            torch.autograd.graph.increment_version(delta)  # the kernel wrote behind autograd's back
        else:
            work = delta.detach().contiguous()
            _launch(x_c, work, g_c, work, eps, step_size, active, True, block)
            delta.copy_(work)
    return delta


# --------------------------------------------------------------------------------------------------
# public, dispatched entry points


def pgd_step(
    x_clean: torch.Tensor,
    delta: torch.Tensor,
    grad: torch.Tensor,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """One signed-gradient descent step of a pixel-space perturbation, projected and clamped.

    Args:
        x_clean: clean images [B, ...] in [0, 1] (fp32, bf16 or fp16).
        delta: current perturbation, same shape.
        grad: gradient of the loss w.r.t. delta, same shape (the step goes against it: descent).
        eps: L-inf radius, a float >= 0 or a per-sample tensor [B].
        step_size: step length, a float >= 0 or a per-sample tensor [B].
        active: optional bool [B]; samples where it is False keep their delta.

    Returns:
        The new perturbation, a new tensor in delta's dtype (contiguous on the Triton path). No autograd
        history: this is a no-grad update. Raises ValueError on mismatched shapes, dtypes or devices.
    """
    if use_triton(delta):
        return pgd_step_triton(x_clean, delta, grad, eps, step_size, active)
    return pgd_step_reference(x_clean, delta, grad, eps, step_size, active)


def pgd_step_(
    x_clean: torch.Tensor,
    delta: torch.Tensor,
    grad: torch.Tensor,
    eps: float | torch.Tensor,
    step_size: float | torch.Tensor,
    active: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-place :func:`pgd_step`: writes the new perturbation into ``delta`` (any layout) and returns it.

    Safe on a leaf ``delta`` that requires grad (the write happens under ``torch.no_grad``); inactive samples
    are not touched at all.
    """
    if use_triton(delta):
        return pgd_step_triton_(x_clean, delta, grad, eps, step_size, active)
    new = pgd_step_reference(x_clean, delta, grad, eps, step_size, active)
    with torch.no_grad():
        delta.copy_(new)
    return delta
