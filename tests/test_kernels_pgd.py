"""The fused PGD step (segpcl.kernels.pgd_step) against its pure-torch reference.

On the CPU the Triton kernel runs under TRITON_INTERPRET=1 (set by conftest.py before triton is imported);
on a CUDA machine without the interpreter it runs compiled. Without either, the Triton tests are skipped and
only the reference and validation tests run.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from triton_support import DEVICE, needs_compiled_triton, needs_triton

import segpcl.kernels as K

P = importlib.import_module("segpcl.kernels.pgd_step")  # the package re-exports a function of that name


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def force_triton(monkeypatch):
    monkeypatch.setenv("SEGPCL_KERNELS", "triton")


def _inputs(shape, dtype=torch.float32, seed=0, eps=0.03):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    # start some pixels at the range ends so that the [0, 1] clamp matters
    x.view(-1)[::7] = 0.0
    x.view(-1)[3::11] = 1.0
    delta = (torch.rand(shape, generator=g) * 2 - 1) * eps * 1.2  # some entries start outside the ball
    grad = torch.randn(shape, generator=g)
    grad.view(-1)[::5] = 0.0  # sign(0) = 0
    return [t.to(DEVICE, dtype) for t in (x, delta, grad)]


def _assert_match(out, ref, dtype):
    assert out.dtype == ref.dtype == dtype
    assert out.shape == ref.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-7)
    else:
        # the interpreter rounds fp32 -> bf16 towards zero, the GPU to nearest: allow one ulp
        torch.testing.assert_close(out.float(), ref.float(), rtol=2**-7, atol=1e-6)


# ----------------------------------------------------------------------------- reference semantics


def test_reference_matches_eager_sequence():
    x, d, g = _inputs((2, 3, 5, 4))
    eps, step = 0.03, 0.01
    expected = torch.clamp(torch.clamp(d - step * torch.sign(g), -eps, eps) + x, 0, 1) - x
    torch.testing.assert_close(P.pgd_step_reference(x, d, g, eps, step), expected, rtol=0, atol=1e-7)


def test_reference_projects_and_clamps():
    x, d, g = _inputs((4, 3, 6, 5))
    eps = torch.tensor([0.0, 0.01, 0.03, 0.5], device=DEVICE)
    out = P.pgd_step_reference(x, d, g, eps, 0.02)
    assert (out.abs() <= eps.view(-1, 1, 1, 1) + 1e-7).all()
    assert ((x + out) >= -1e-7).all() and ((x + out) <= 1 + 1e-7).all()
    assert (out[0] == 0).all()


# ----------------------------------------------------------------------------- Triton vs reference


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 17, 19), (1, 5), (3, 1), (37, 7)])
def test_triton_matches_reference(force_triton, shape, dtype):
    x, d, g = _inputs(shape, dtype)
    out = K.pgd_step(x, d, g, 0.03, 0.01)
    _assert_match(out, P.pgd_step_reference(x, d, g, 0.03, 0.01), dtype)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_sample_eps_step_and_active(force_triton, dtype):
    shape = (4, 3, 9, 7)
    x, d, g = _inputs(shape, dtype)
    eps = torch.tensor([0.0, 0.01, 0.03, 0.2], device=DEVICE)
    step = torch.tensor([0.005, 0.02, 0.0, 0.1], device=DEVICE, dtype=torch.float64)
    active = torch.tensor([True, False, True, True], device=DEVICE)
    out = K.pgd_step(x, d, g, eps, step, active)
    _assert_match(out, P.pgd_step_reference(x, d, g, eps, step, active), dtype)
    assert torch.equal(out[1], d[1])  # frozen sample untouched, bit for bit
    assert (out[0] == 0).all()  # eps = 0


@needs_triton
def test_mixed_dtypes_store_in_delta_dtype(force_triton):
    x, d, g = _inputs((2, 3, 5, 6))
    out = K.pgd_step(x, d.to(torch.bfloat16), g.to(torch.float16), 0.03, 0.01)
    ref = P.pgd_step_reference(x, d.to(torch.bfloat16), g.to(torch.float16), 0.03, 0.01)
    _assert_match(out, ref, torch.bfloat16)


@needs_triton
def test_zero_and_nan_gradient_take_no_step(force_triton):
    x, d, g = _inputs((2, 8))
    d = d.clamp(-0.03, 0.03)
    d = torch.clamp(x + d, 0, 1) - x  # already feasible: a zero step must leave it as is
    g = torch.zeros_like(g)
    g[1, :4] = float("nan")
    out = K.pgd_step(x, d, g, 0.03, 0.01)
    assert not out.isnan().any()
    torch.testing.assert_close(out, d, rtol=0, atol=1e-7)
    torch.testing.assert_close(out, P.pgd_step_reference(x, d, g, 0.03, 0.01), rtol=0, atol=1e-7)


@needs_triton
def test_non_contiguous_inputs(force_triton):
    x, d, g = _inputs((2, 17, 19, 3))
    x, d, g = (t.permute(0, 3, 1, 2) for t in (x, d, g))  # channels-last views of [2, 3, 17, 19]
    assert not d.is_contiguous()
    out = K.pgd_step(x, d, g, 0.03, 0.01)
    _assert_match(out, P.pgd_step_reference(x, d, g, 0.03, 0.01), torch.float32)


@needs_triton
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_in_place_writes_into_delta(force_triton, layout):
    x, d, g = _inputs((3, 3, 11, 10))
    active = torch.tensor([True, True, False], device=DEVICE)
    ref = P.pgd_step_reference(x, d, g, 0.03, 0.01, active)
    if layout == "strided":
        holder = torch.zeros(3, 3, 11, 20, device=DEVICE)
        holder[..., ::2] = d
        target = holder[..., ::2]
        assert not target.is_contiguous()
    else:
        target = d.clone()
    ptr = target.data_ptr()
    returned = K.pgd_step_(x, target, g, 0.03, 0.01, active)
    assert returned is target and target.data_ptr() == ptr
    torch.testing.assert_close(target, ref, rtol=0, atol=1e-7)
    if layout == "strided":
        assert (holder[..., 1::2] == 0).all()  # the gaps between the strided elements are untouched


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_in_place_on_leaf_requiring_grad(monkeypatch, backend):
    monkeypatch.setenv("SEGPCL_KERNELS", backend)
    x, d, g = _inputs((2, 3, 4, 4))
    delta = d.clone().requires_grad_(True)
    version = delta._version
    K.pgd_step_(x, delta, g, 0.03, 0.01)
    assert delta.requires_grad and delta.grad_fn is None
    assert delta._version > version
    torch.testing.assert_close(delta.detach(), P.pgd_step_reference(x, d, g, 0.03, 0.01), rtol=0, atol=1e-7)
    out = K.pgd_step(x.requires_grad_(True), delta, g.requires_grad_(True), 0.03, 0.01)
    assert not out.requires_grad


@needs_triton
def test_empty_batch(force_triton):
    x, d, g = (torch.zeros(0, 3, 4, device=DEVICE) for _ in range(3))
    assert K.pgd_step(x, d, g, 0.03, 0.01).shape == (0, 3, 4)
    assert K.pgd_step_(x, d, g, 0.03, 0.01) is d


@needs_triton
def test_block_boundaries(force_triton):
    # a small forced block makes each sample span several programs with a ragged last block
    x, d, g = _inputs((3, 1000))
    out = P.pgd_step_triton(x, d, g, 0.05, 0.02, block=256)
    _assert_match(out, P.pgd_step_reference(x, d, g, 0.05, 0.02), torch.float32)


# --------------------------------------------------------------------------------------- bad input


_BAD = [
    (lambda x, d, g: ((x[:1], d, g), {}), "same shape"),
    (lambda x, d, g: ((x, d, g[..., :-1]), {}), "same shape"),
    (lambda x, d, g: ((x, d, g), {"active": torch.ones(3, dtype=torch.bool)}), "active must have shape"),
    (lambda x, d, g: ((x, d, g), {"active": torch.ones(2)}), "active must be a bool tensor"),
    (lambda x, d, g: ((x, d, g), {"eps": torch.ones(3)}), "eps must be a float or a tensor of shape"),
    (lambda x, d, g: ((x, d, g), {"eps": -0.1}), "eps must be a finite number >= 0"),
    (lambda x, d, g: ((x, d, g), {"step_size": "0.1"}), "step_size must be a float"),
    (lambda x, d, g: ((x.double(), d, g), {}), "x_clean has dtype torch.float64"),
    (lambda x, d, g: ((x, d.long(), g), {}), "delta has dtype torch.int64"),
    (lambda x, d, g: ((x[0, 0, 0, 0], d[0, 0, 0, 0], g[0, 0, 0, 0]), {}), "leading batch dimension"),
]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("make, message", _BAD)
@pytest.mark.parametrize("fn", [K.pgd_step, K.pgd_step_])
def test_bad_input_raises_value_error(monkeypatch, backend, make, message, fn):
    monkeypatch.setenv("SEGPCL_KERNELS", backend)
    x, d, g = (t.cpu() for t in _inputs((2, 3, 4, 5)))
    if backend == "triton":
        x, d, g = (t.to(DEVICE) for t in (x, d, g))
    args, kwargs = make(x, d, g)
    kwargs = {"eps": 0.03, "step_size": 0.01, **kwargs}
    with pytest.raises(ValueError, match=message):
        fn(*args, **kwargs)


# --------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_compiled_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_matches_reference(monkeypatch, dtype):
    monkeypatch.setenv("SEGPCL_KERNELS", "auto")
    assert K.backend("cuda") == "triton"
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (8, 3, 224, 224)
    x = torch.rand(shape, device="cuda", generator=gen).to(dtype)
    d = ((torch.rand(shape, device="cuda", generator=gen) * 2 - 1) * 0.05).to(dtype)
    g = torch.randn(shape, device="cuda", generator=gen).to(dtype)
    eps = torch.linspace(0.0, 0.06, 8, device="cuda")
    active = torch.arange(8, device="cuda") % 3 != 0
    ref = P.pgd_step_reference(x, d, g, eps, 0.01, active)
    torch.testing.assert_close(K.pgd_step(x, d, g, eps, 0.01, active), ref, rtol=0, atol=0)
    K.pgd_step_(x, d, g, eps, 0.01, active)
    torch.testing.assert_close(d, ref, rtol=0, atol=0)
