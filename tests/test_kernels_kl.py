"""The fused anchor KL (segpcl.kernels.anchor_kl) against its pure-torch reference: forward and gradient.

On the CPU the Triton kernel runs under TRITON_INTERPRET=1 (set by conftest.py before triton is imported);
on a CUDA machine without the interpreter it runs compiled. Without either, the Triton tests are skipped.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from triton_support import DEVICE, needs_compiled_triton, needs_triton

import segpcl.kernels as K

A = importlib.import_module("segpcl.kernels.anchor_kl")  # the package re-exports a function of that name


@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("SEGPCL_KERNELS", "triton")


def _logits(n, c, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g) * scale
    t = torch.randn(n, c, generator=g) * scale
    return s.to(DEVICE, dtype), t.to(DEVICE, dtype)


def _loss_and_grad(fn, s, t, tau, **kw):
    s = s.detach().clone().requires_grad_(True)
    loss = fn(s, t, tau, **kw)
    loss.backward()
    return loss.detach(), s.grad


def _tols(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-4}


# --------------------------------------------------------------------------------------- reference


def test_reference_equals_kl_div_spec():
    s, t = _logits(5, 7)
    for tau in (1.0, 0.5, 2.0, 20.0):
        expected = F.kl_div(F.log_softmax(s / tau, -1), F.softmax(t / tau, -1), reduction="batchmean")
        torch.testing.assert_close(K.anchor_kl_reference(s, t, tau), expected, rtol=0, atol=0)


def test_reference_empty_and_teacher_detached():
    s = torch.zeros(0, 4, requires_grad=True)
    loss = K.anchor_kl_reference(s, torch.zeros(0, 4))
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert s.grad.shape == (0, 4)
    s, t = (x.requires_grad_(True) for x in _logits(3, 4))
    K.anchor_kl_reference(s, t).backward()
    assert t.grad is None and s.grad is not None


# ----------------------------------------------------------------------------- Triton vs reference


@needs_triton
@pytest.mark.parametrize("n", [1, 3, 37])
@pytest.mark.parametrize("c", [1, 2, 100, 1031])
def test_forward_and_grad_match_reference(force_triton, n, c):
    s, t = _logits(n, c, seed=n * 1000 + c)
    tau = 2.0 if c % 2 else 0.5
    loss, grad = _loss_and_grad(K.anchor_kl, s, t, tau)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, tau)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


@needs_triton
@pytest.mark.parametrize("n, c, block", [(3, 5, None), (37, 100, None), (2, 1031, None), (3, 1031, 256), (5, 100, 16)])
def test_paper_temperature_tau_20_matches_reference(force_triton, n, c, block):
    # ACGD's tau = 20 on logits of the size ACGD sees (s * cos, s = 100): a flat softmax, small KL
    s, t = _logits(n, c, seed=20 + n + c, scale=30.0)
    loss, grad = _loss_and_grad(A.anchor_kl_triton, s, t, 20.0, block=block)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 20.0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-8)
    loss, grad = _loss_and_grad(K.anchor_kl, s, t, 20.0)  # the dispatched entry point
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-8)


@needs_triton
@pytest.mark.parametrize("n, c, block", [(3, 1031, 256), (37, 100, 16), (2, 2, 16)])
def test_column_blocked_path_matches_reference(n, c, block):
    # block < C forces the two-pass online-softmax path
    s, t = _logits(n, c, seed=7)
    loss, grad = _loss_and_grad(A.anchor_kl_triton, s, t, 1.0, block=block)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 1.0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, c", [(3, 100), (37, 2)])
def test_low_precision_inputs(force_triton, dtype, n, c):
    s, t = _logits(n, c, dtype)
    loss, grad = _loss_and_grad(K.anchor_kl, s, t, 1.0)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 1.0)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)  # both accumulate in fp32
    torch.testing.assert_close(grad, ref_grad, **_tols(dtype))


@needs_triton
def test_mixed_student_teacher_dtypes(force_triton):
    s, t = _logits(5, 33)
    s = s.to(torch.bfloat16)
    loss, grad = _loss_and_grad(K.anchor_kl, s, t, 1.0)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 1.0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, **_tols(torch.bfloat16))


@needs_triton
def test_non_contiguous_inputs(force_triton):
    s_t, t_wide = _logits(9, 40)
    s = s_t.t()  # [40, 9] with column stride 40: copied by the launcher
    t = t_wide.reshape(40, 9)  # contiguous; compare against a row-strided slice below too
    wide = torch.randn(40, 20, device=DEVICE)
    t2 = wide[:, 3:12]  # [40, 9], row stride 20: used in place by the kernel
    for teacher in (t, t2):
        loss, grad = _loss_and_grad(K.anchor_kl, s, teacher, 1.0)
        ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, teacher, 1.0)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


@needs_triton
@pytest.mark.parametrize("block", [None, 16])
def test_extreme_logits_are_finite(force_triton, block):
    s = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 3.0, -1e4], [1e4, 1e4, -1e4, -1e4]], device=DEVICE)
    t = torch.tensor([[-1e4, 1e4, 0.0, -1e4], [1e4, -1e4, -1e4, 2.0], [1e4, 1e4, -1e4, -1e4]], device=DEVICE)
    for tau in (1.0, 0.1):
        loss, grad = _loss_and_grad(A.anchor_kl_triton, s, t, tau, block=block)
        ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, tau)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


@needs_triton
def test_teacher_zero_probabilities_contribute_nothing(force_triton):
    # teacher -inf (a masked class): p = 0 there, and 0 * log 0 counts as 0
    s, t = _logits(4, 6)
    t[:, 0] = float("-inf")
    loss, grad = _loss_and_grad(K.anchor_kl, s, t, 1.0)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 1.0)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


@needs_triton
def test_identical_rows_give_zero(force_triton):
    s, _ = _logits(3, 10)
    loss, grad = _loss_and_grad(K.anchor_kl, s, s.clone(), 1.0)
    assert abs(loss.item()) < 1e-6 and grad.abs().max().item() < 1e-7


@needs_triton
def test_empty_rows(force_triton):
    s = torch.zeros(0, 5, device=DEVICE, requires_grad=True)
    loss = K.anchor_kl(s, torch.zeros(0, 5, device=DEVICE))
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert s.grad.shape == (0, 5) and s.grad.dtype == torch.float32


@needs_triton
def test_backward_scales_by_grad_output_and_can_be_replayed(force_triton):
    s, t = _logits(3, 12)
    _, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 1.0)
    s = s.requires_grad_(True)
    loss = K.anchor_kl(s, t, 1.0)
    (2.5 * loss).backward(retain_graph=True)
    torch.testing.assert_close(s.grad, 2.5 * ref_grad, rtol=1e-5, atol=1e-7)
    (-1.0 * loss).backward()  # the saved gradient must not have been modified in place
    torch.testing.assert_close(s.grad, 1.5 * ref_grad, rtol=1e-5, atol=1e-7)


@needs_triton
def test_teacher_gets_no_grad_and_no_grad_mode(force_triton):
    s, t = (x.requires_grad_(True) for x in _logits(3, 5))
    loss = K.anchor_kl(s, t, 1.0)
    loss.backward()
    assert t.grad is None
    with torch.no_grad():
        plain = K.anchor_kl(s, t, 1.0)
    assert not plain.requires_grad
    torch.testing.assert_close(plain, loss.detach(), rtol=0, atol=0)


@needs_triton
def test_gradient_matches_finite_differences(force_triton):
    # gradcheck-style: the directional derivative along random directions vs central differences (fp32)
    s, t = _logits(3, 5, scale=1.0)
    _, grad = _loss_and_grad(K.anchor_kl, s, t, 0.7)
    gen = torch.Generator().manual_seed(1)
    h = 1e-2
    for _ in range(3):
        v = torch.randn(s.shape, generator=gen).to(DEVICE)
        with torch.no_grad():
            fd = (K.anchor_kl(s + h * v, t, 0.7) - K.anchor_kl(s - h * v, t, 0.7)) / (2 * h)
        torch.testing.assert_close((grad * v).sum(), fd, rtol=2e-3, atol=2e-4)


# --------------------------------------------------------------------------------------- bad input


_BAD = [
    (lambda s, t: ((s[0], t[0]), {}), "must be 2-D"),
    (lambda s, t: ((s[None], t[None]), {}), "must be 2-D"),
    (lambda s, t: ((s, t[:, :-1]), {}), "same shape"),
    (lambda s, t: ((s[:, :0], t[:, :0]), {}), "at least one column"),
    (lambda s, t: ((s, t), {"tau": 0.0}), "tau must be a finite number > 0"),
    (lambda s, t: ((s, t), {"tau": float("nan")}), "tau must be a finite number > 0"),
    (lambda s, t: ((s.double(), t), {}), "student_logits has dtype torch.float64"),
    (lambda s, t: ((s, t.long()), {}), "teacher_logits has dtype torch.int64"),
]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("make, message", _BAD)
def test_bad_input_raises_value_error(monkeypatch, backend, make, message):
    monkeypatch.setenv("SEGPCL_KERNELS", backend)
    s, t = _logits(3, 4)
    if backend == "torch":
        s, t = s.cpu(), t.cpu()
    args, kwargs = make(s, t)
    with pytest.raises(ValueError, match=message):
        K.anchor_kl(*args, **kwargs)


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_compiled_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, c", [(1, 1), (37, 1031), (4096, 300), (5, 10000)])
def test_gpu_matches_reference(monkeypatch, dtype, n, c):
    monkeypatch.setenv("SEGPCL_KERNELS", "auto")
    assert K.backend("cuda") == "triton"
    gen = torch.Generator(device="cuda").manual_seed(0)
    s = (torch.randn(n, c, device="cuda", generator=gen) * 4).to(dtype)
    t = (torch.randn(n, c, device="cuda", generator=gen) * 4).to(dtype)
    loss, grad = _loss_and_grad(K.anchor_kl, s, t, 1.0)
    ref_loss, ref_grad = _loss_and_grad(K.anchor_kl_reference, s, t, 1.0)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, **_tols(dtype))
