"""The Linear attention (segpcl.models.attention) against torch's nn.MultiheadAttention: one module under every
calling convention open_clip (or anyone) uses, both towers of a tiny open_clip CLIP in fp32 and under bf16
autocast, gradients, and the state-dict key mapping back to open_clip's layout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from segpcl.models.attention import LinearSelfAttention, linearize_attention, open_clip_keys
from segpcl.models.clip import ClipModel
from segpcl.models.tiny import build_tiny

FP32 = {"rtol": 1e-5, "atol": 1e-6}


def _mha(d, heads, batch_first, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(d, heads, batch_first=batch_first)
    with torch.no_grad():  # MHA zero-initialises the biases: make them matter
        mha.in_proj_bias.normal_(0, 0.5)
        mha.out_proj.bias.normal_(0, 0.5)
    return mha.eval()


def _causal(lq, lk=None, bool_mask=False):
    lk = lq if lk is None else lk
    blocked = torch.ones(lq, lk, dtype=torch.bool).triu(1)
    if bool_mask:
        return blocked
    return torch.zeros(lq, lk).masked_fill(blocked, float("-inf"))  # open_clip's float causal mask


def _run(module, q, k, v, **kw):
    """Output and the gradients of (q, k, v) and of every parameter, for sum(out * w)."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    same = kw.pop("self_attention", False)
    if same:
        k = v = q
    out = module(q, k, v, need_weights=False, **kw)[0]
    w = torch.linspace(-1, 1, out.numel()).view_as(out)
    grads = torch.autograd.grad((out.float() * w).sum(), [q] + ([] if same else [k, v]) + list(module.parameters()))
    return out.detach(), grads


def _assert_same(mha, lin, q, k, v, tol=FP32, **kw):
    """Outputs and input gradients to `tol`; parameter gradients are sums over every token of terms of size ~1,
    so fp32 summation order shows: to `tol["atol"]` per summed token."""
    want, want_g = _run(mha, q, k, v, **dict(kw))
    got, got_g = _run(lin, q, k, v, **dict(kw))
    torch.testing.assert_close(got, want, **tol)
    assert len(got_g) == len(want_g)
    n_inputs = len(want_g) - len(list(mha.parameters()))
    for i, (g, h) in enumerate(zip(got_g, want_g, strict=True)):
        atol = tol["atol"] if i < n_inputs else tol["atol"] * (want.numel() // want.shape[-1])
        torch.testing.assert_close(g, h, rtol=tol["rtol"], atol=atol)


def test_from_mha_copies_the_parameters_in_order():
    mha = _mha(16, 4, True)
    lin = LinearSelfAttention.from_mha(mha)
    assert isinstance(lin.in_proj, nn.Linear) and isinstance(lin.out_proj, nn.Linear)
    assert torch.equal(lin.in_proj.weight, mha.in_proj_weight) and torch.equal(lin.in_proj.bias, mha.in_proj_bias)
    assert torch.equal(lin.out_proj.weight, mha.out_proj.weight) and torch.equal(lin.out_proj.bias, mha.out_proj.bias)
    assert lin.in_proj.weight.data_ptr() != mha.in_proj_weight.data_ptr()  # a copy, not shared storage
    assert sum(p.numel() for p in lin.parameters()) == sum(p.numel() for p in mha.parameters())
    assert not lin.training and lin.batch_first


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(
    "case", ["self", "self_separate_tensors", "causal_float", "causal_bool", "mask_3d", "padding", "causal_padding"]
)
def test_matches_mha_self_attention(batch_first, case):
    n, length, d, heads = 3, 7, 16, 4
    mha = _mha(d, heads, batch_first)
    lin = LinearSelfAttention.from_mha(mha)
    torch.manual_seed(1)
    x = torch.randn(n, length, d) if batch_first else torch.randn(length, n, d)
    pad = torch.zeros(n, length, dtype=torch.bool)
    pad[0, -2:] = True  # the first sequence's last two keys are padding
    pad[2, -1] = True
    kw = {
        "self": {"self_attention": True},
        "self_separate_tensors": {},
        "causal_float": {"self_attention": True, "attn_mask": _causal(length)},
        "causal_bool": {"self_attention": True, "attn_mask": _causal(length, bool_mask=True)},
        "mask_3d": {"attn_mask": torch.randn(n * heads, length, length)},
        "padding": {"self_attention": True, "key_padding_mask": pad},
        "causal_padding": {"attn_mask": _causal(length, bool_mask=True), "key_padding_mask": pad},
    }[case]
    _assert_same(mha, lin, x, x, x, **kw)


@pytest.mark.parametrize("batch_first", [True, False])
def test_matches_mha_cross_attention(batch_first):
    # query differs from key and value (open_clip's attentional pooler calls its MHA this way)
    n, lq, lk, d, heads = 2, 3, 9, 16, 2
    mha = _mha(d, heads, batch_first, seed=3)
    lin = LinearSelfAttention.from_mha(mha)
    torch.manual_seed(4)
    shape = (lambda length: (n, length, d)) if batch_first else (lambda length: (length, n, d))
    q, k, v = torch.randn(shape(lq)), torch.randn(shape(lk)), torch.randn(shape(lk))
    _assert_same(mha, lin, q, k, v)
    pad = torch.zeros(n, lk)
    pad[1, :4] = float("-inf")  # a float (additive) padding mask with a float attention mask
    _assert_same(mha, lin, q, k, v, key_padding_mask=pad, attn_mask=torch.randn(lq, lk))


def test_matches_mha_on_a_vit_b_16_sized_block():
    n, length, d, heads = 2, 197, 768, 12
    mha = _mha(d, heads, True, seed=5)
    lin = LinearSelfAttention.from_mha(mha)
    torch.manual_seed(6)
    x = torch.randn(n, length, d)
    _assert_same(mha, lin, x, x, x, tol={"rtol": 1e-5, "atol": 2e-6}, self_attention=True)


def test_matches_mha_under_bf16_autocast():
    n, length, d, heads = 2, 9, 32, 4
    mha = _mha(d, heads, True, seed=7)
    lin = LinearSelfAttention.from_mha(mha)
    x = torch.randn(n, length, d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = _run(mha, x, x, x, self_attention=True, attn_mask=_causal(length))
        got, _ = _run(lin, x, x, x, self_attention=True, attn_mask=_causal(length))
    assert got.dtype == want.dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


def test_bad_head_count_and_unconvertible_mha():
    with pytest.raises(ValueError, match="divisible"):
        LinearSelfAttention(10, 3)
    with pytest.raises(ValueError):
        LinearSelfAttention.from_mha(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    with pytest.raises(ValueError):
        LinearSelfAttention.from_mha(nn.MultiheadAttention(8, 2, bias=False))
    with pytest.raises(ValueError):
        LinearSelfAttention.from_mha(nn.MultiheadAttention(8, 2, add_bias_kv=True))


# ------------------------------------------------------------------------------------ whole towers


@pytest.fixture
def towers():
    """(plain open_clip tiny CLIP with nn.MultiheadAttention, the same weights linearized inside a ClipModel)."""
    torch.manual_seed(0)
    clip, tokenizer, size = build_tiny("tiny")
    clip.eval()
    with torch.no_grad():  # non-zero attention biases, so a mix-up of q/k/v biases would show
        for m in clip.modules():
            if isinstance(m, nn.MultiheadAttention):
                m.in_proj_bias.normal_(0, 0.2)
                m.out_proj.bias.normal_(0, 0.2)
    reference = copy.deepcopy(clip)
    model = ClipModel(clip, tokenizer, size).eval()
    return reference, model


def _inputs(model):
    torch.manual_seed(2)
    images = torch.rand(3, 3, 32, 32)
    tokens = model.tokenize(["a red circle.", "a small blue star on a green square.", "x"])
    return model._normalise(images), tokens


def test_linearized_towers_have_no_multihead_attention_left(towers):
    reference, model = towers
    n_ref = sum(isinstance(m, nn.MultiheadAttention) for m in reference.modules())
    assert n_ref == 3  # 2 visual + 1 text block
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert sum(isinstance(m, LinearSelfAttention) for m in model.modules()) == n_ref
    assert linearize_attention(model) == 0  # idempotent


def test_linearized_towers_match_open_clip_fp32(towers):
    reference, model = towers
    x, tokens = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(model.base.encode_image(x), reference.encode_image(x), **FP32)
        torch.testing.assert_close(model.base.encode_text(tokens), reference.encode_text(tokens), **FP32)
        f = model.image_features(model.pixel_mean + x * model.pixel_std)
        want = torch.nn.functional.normalize(reference.encode_image(x), dim=-1)
        torch.testing.assert_close(f, want, **FP32)


def test_linearized_towers_input_gradients_match(towers):
    reference, model = towers
    x, _ = _inputs(model)
    grads = []
    for clip in (reference, model.base):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(clip.encode_image(xi).square().sum(), xi)
        grads.append(g)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    # the text tower: gradient at the token embeddings' output (the causal mask is in play)
    emb = []
    for clip in (reference, model.base):
        out = {}

        def keep(_module, _inp, output, out=out):
            output.retain_grad()
            out["e"] = output

        handle = clip.token_embedding.register_forward_hook(keep)
        clip.encode_text(_inputs(model)[1]).square().sum().backward()
        handle.remove()
        emb.append(out["e"].grad)
    torch.testing.assert_close(emb[1], emb[0], rtol=1e-5, atol=1e-6)


def test_linearized_towers_match_open_clip_bf16_autocast(towers):
    reference, model = towers
    x, tokens = _inputs(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for got, want in (
            (model.base.encode_image(x), reference.encode_image(x)),
            (model.base.encode_text(tokens), reference.encode_text(tokens)),
        ):
            got = torch.nn.functional.normalize(got.float(), dim=-1)
            want = torch.nn.functional.normalize(want.float(), dim=-1)
            torch.testing.assert_close(got, want, rtol=0, atol=3e-2)


def test_open_clip_keys_load_strictly_into_a_fresh_open_clip_model(towers):
    reference, model = towers
    state = model.open_clip_state_dict()
    assert set(state) == set(reference.state_dict())
    assert set(open_clip_keys(model.base.state_dict())) == set(state)
    assert not any(".attn.in_proj." in k for k in state)
    torch.manual_seed(123)  # different random init: only the loaded weights can make it equal
    fresh, _, _ = build_tiny("tiny")
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    x, tokens = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(x), model.base.encode_image(x), **FP32)
        torch.testing.assert_close(fresh.encode_text(tokens), model.base.encode_text(tokens), **FP32)
    # and back: the fresh open_clip model, wrapped, holds the same weights as the linearized one
    wrapped = ClipModel(fresh, model.tokenizer, model.image_size)
    sd, want = wrapped.base.state_dict(), model.base.state_dict()
    assert sd.keys() == want.keys() and all(torch.equal(sd[k], want[k]) for k in sd)
