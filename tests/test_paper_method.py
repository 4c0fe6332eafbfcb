"""The paper's method parts (DESIGN §4) against independent plain torch references written here: tau^2-scaled
ACGD on both kernel backends, rooted TSGR (KL of neighbourhood softmaxes in the zero-shot text space), raw-space
visual features, logit and probability fusion, and the NCM prototype branch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from triton_support import needs_triton

from segpcl.method.acgd import acgd_loss
from segpcl.method.prototypes import PrototypeMemory, dual_path_probs, prototype_probs
from segpcl.method.tsgr import RootedGeometryRegularizer

# ------------------------------------------------------------------------------------------------ ACGD


def _ref_acgd(student, teacher, tau):
    """tau^2 * mean over rows of KL(softmax(t / tau) || softmax(s / tau)), written out."""
    p_t = torch.softmax(teacher / tau, dim=1)
    log_p_t = torch.log_softmax(teacher / tau, dim=1)
    log_p_s = torch.log_softmax(student / tau, dim=1)
    return tau**2 * (p_t * (log_p_t - log_p_s)).sum(dim=1).mean()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("tau", [20.0, 1.0])
@pytest.mark.parametrize("n, c", [(6, 5), (3, 40)])
def test_acgd_is_tau_squared_kl(monkeypatch, backend, tau, n, c):
    monkeypatch.setenv("SEGPCL_KERNELS", backend)
    g = torch.Generator().manual_seed(n * 100 + c)
    # logits as ACGD sees them: s * cos with s = 100
    student = (
        100 * F.normalize(torch.randn(n, 8, generator=g), dim=1) @ F.normalize(torch.randn(c, 8, generator=g), dim=1).T
    )
    teacher = (student + 20 * torch.randn(n, c, generator=g)).requires_grad_(True)
    s1 = student.clone().requires_grad_(True)
    s2 = student.clone().requires_grad_(True)
    got = acgd_loss(s1, teacher, tau)
    want = _ref_acgd(s2, teacher.detach(), tau)
    assert got.dtype == torch.float32 and got.shape == ()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-5, atol=2e-6)  # logits ~ 100 at tau = 1: peaky
    assert teacher.grad is None  # the teacher side never gets a gradient


def test_acgd_tau_squared_keeps_the_gradient_size():
    # with the tau^2 factor, d/ds -> centred(s - t) / (C N) as tau grows: the gradient keeps its size
    torch.manual_seed(0)
    s = torch.randn(4, 6).requires_grad_(True)
    t = torch.randn(4, 6)
    limit = (s.detach() - t) - (s.detach() - t).mean(dim=1, keepdim=True)
    limit = limit / (6 * 4)
    for tau, rel in ((20.0, 0.15), (2000.0, 2e-3)):
        (g,) = torch.autograd.grad(acgd_loss(s, t, tau), s)
        assert (g - limit).abs().max() <= rel * limit.abs().max(), tau


# ------------------------------------------------------------------------------------------ rooted TSGR


def _ref_rooted(reference, student, roots, k, tau):
    """For each root: its k nearest other classes by reference cosine; KL(softmax(cos_ref / tau) ||
    softmax(cos_student / tau)) over them; the mean over roots. Explicit loops."""
    ref = [r / r.norm() for r in reference]
    stu = [s / s.norm() for s in student]
    losses = []
    for r in roots:
        others = [j for j in range(len(ref)) if j != r]
        others.sort(key=lambda j: (-float(ref[r] @ ref[j]), j))
        nbrs = others[:k]
        if not nbrs:
            continue
        cos_ref = torch.stack([ref[r] @ ref[j] for j in nbrs])
        cos_stu = torch.stack([stu[r] @ stu[j] for j in nbrs])
        q = torch.softmax(cos_ref / tau, dim=0)
        log_p = torch.log_softmax(cos_stu / tau, dim=0)
        losses.append((q * (torch.log(q) - log_p)).sum())
    return torch.stack(losses).mean() if losses else student.sum() * 0


def _texts(c, d=8, seed=0, move=0.3):
    g = torch.Generator().manual_seed(seed)
    reference = F.normalize(torch.randn(c, d, generator=g), dim=1)
    student = reference + move * torch.randn(c, d, generator=g)  # not normalised: the loss normalises
    return reference, student


@pytest.mark.parametrize(
    "c, roots, k",
    [(12, [8, 9, 10, 11], 4), (12, [11, 3], 1), (7, [5, 6], 6), (7, [5, 6], 10), (9, [2, 2, 8], 3)],
)
def test_rooted_tsgr_equals_reference(c, roots, k):
    reference, student = _texts(c, seed=c + k)
    reg = RootedGeometryRegularizer(reference, roots, k=k, tau=0.05)
    kk = min(k, c - 1)
    assert reg.n_edges == len(roots) * kk
    for row, r in zip(reg.neighbors.tolist(), roots, strict=True):
        want = sorted((j for j in range(c) if j != r), key=lambda j: (-float(reference[r] @ reference[j]), j))[:kk]
        assert row == want
    s1 = student.clone().requires_grad_(True)
    s2 = student.clone().requires_grad_(True)
    got = reg.loss(s1)
    want = _ref_rooted(reference, s2, roots, k, 0.05)
    if kk > 1:
        assert float(want.detach()) > 1e-3  # the student moved: a real, non-trivial loss
    else:  # a softmax over one neighbour is 1 whatever the cosine: k = 1 constrains nothing
        assert float(want.detach()) == 0.0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(got, s1)
    (g2,) = torch.autograd.grad(want, s2)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    involved = set(roots) | set(reg.neighbors.flatten().tolist())
    untouched = [j for j in range(c) if j not in involved]
    if untouched:  # a class in no neighbourhood gets no gradient: the cost is O(|new| k), not O(C^2)
        assert g1[untouched].abs().max() == 0


def test_rooted_tsgr_zero_and_stationary_when_student_is_the_reference():
    reference, _ = _texts(10, seed=3)
    reg = RootedGeometryRegularizer(reference, [7, 8, 9], k=4, tau=0.05)
    student = (2.5 * reference).requires_grad_(True)  # same directions: same cosines
    loss = reg.loss(student)
    assert abs(float(loss.detach())) < 1e-6
    (g,) = torch.autograd.grad(loss, student)
    assert g.abs().max() < 1e-4


def test_rooted_tsgr_without_neighbours_is_zero_with_a_gradient_path():
    reference, student = _texts(1, seed=4)
    reg = RootedGeometryRegularizer(reference, [0], k=10, tau=0.05)
    assert reg.n_edges == 0
    s = student.clone().requires_grad_(True)
    loss = reg.loss(s)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


# ----------------------------------------------------------------------------- raw-space visual features


def test_image_features_and_raw_match_open_clip(tiny_model):
    x = torch.rand(3, 3, 32, 32)
    visual = tiny_model.base.visual
    seen = {}
    handle = visual.ln_post.register_forward_hook(lambda _m, _i, out: seen.__setitem__("ln_post", out))
    with torch.no_grad():
        f, v = tiny_model.image_features_and_raw(x)
    handle.remove()
    assert v.shape == (3, tiny_model.raw_dim) and tiny_model.raw_dim == visual.proj.shape[0] == 64
    assert f.dtype == v.dtype == torch.float32
    torch.testing.assert_close(v, seen["ln_post"][:, 0])  # the class token after ln_post, before proj
    torch.testing.assert_close(f, F.normalize(v @ visual.proj, dim=-1), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(f, tiny_model.image_features(x), rtol=1e-5, atol=1e-6)
    assert isinstance(visual.proj, torch.nn.Parameter)  # restored after the forward
    assert "visual.proj" in tiny_model.base.state_dict()


def test_image_features_and_raw_restores_proj_on_error_and_passes_gradients(tiny_model):
    visual = tiny_model.base.visual
    proj = visual.proj
    with pytest.raises(RuntimeError):
        tiny_model.image_features_and_raw(torch.rand(2, 5, 32, 32))  # wrong channel count
    assert visual.proj is proj
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    f, v = tiny_model.image_features_and_raw(x)
    (g,) = torch.autograd.grad(v.sum() + f.sum(), x)
    assert g.abs().sum() > 0


# ----------------------------------------------------------------------------------- dual-path inference


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def _hand_case():
    f = torch.tensor([[0.6, 0.8], [1.0, 0.0]])  # normalised joint features
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])
    v = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 4.0]])  # raw features, not normalised
    protos = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 1.0, 0.0]])
    return f, text, v, protos


def _dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def _unit_list(a):
    n = math.sqrt(sum(float(x) ** 2 for x in a))
    return [float(x) / n for x in a]


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_logit_fusion_by_hand(beta):
    f, text, v, protos = _hand_case()
    s, s_v = 10.0, 7.0
    got = dual_path_probs(f, text, v, protos, s, s_v, beta, fusion="logits")
    want = []
    for b in range(2):
        vn = _unit_list(v[b])
        logits = [s * _dot(f[b], text[c]) + beta * s_v * _dot(vn, protos[c]) for c in range(3)]
        want.append(_softmax(logits))
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-6, atol=1e-7)


def test_probability_fusion_and_ncm_by_hand():
    f, text, v, protos = _hand_case()
    s, s_v, beta = 10.0, 7.0, 0.3
    mix, ncm = [], []
    for b in range(2):
        vn = _unit_list(v[b])
        clip = _softmax([s * _dot(f[b], text[c]) for c in range(3)])
        proto = _softmax([s_v * _dot(vn, protos[c]) for c in range(3)])
        mix.append([(1 - beta) * p + beta * q for p, q in zip(clip, proto, strict=True)])
        ncm.append(proto)
    got = dual_path_probs(f, text, v, protos, s, s_v, beta, fusion="probs")
    torch.testing.assert_close(got, torch.tensor(mix), rtol=1e-6, atol=1e-7)
    got_ncm = prototype_probs(v, protos, s_v)
    torch.testing.assert_close(got_ncm, torch.tensor(ncm), rtol=1e-6, atol=1e-7)
    assert got_ncm.argmax(dim=1).tolist() == [0, 1]  # nearest class mean by cosine: v1 = 5 * P_1
    clip_only = dual_path_probs(f, text, v, protos, s, s_v, 0.0, fusion="logits")
    torch.testing.assert_close(clip_only, torch.softmax(s * f @ text.T, dim=1))


def test_prototype_matrix_without_fallback_is_zero_for_missing_classes():
    mem = PrototypeMemory(3)
    mem.add(torch.tensor([[2.0, 0, 0], [4.0, 0, 0], [0, 0, 5.0]]), torch.tensor([0, 0, 2]))
    m = mem.matrix(4)
    want = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0], [0, 0, 0]])
    torch.testing.assert_close(m, want)
    assert mem.matrix(2).shape == (2, 3) and mem.matrix(2)[1].abs().sum() == 0  # class 2 is beyond n
    fallback = torch.tensor([[0, 3.0, 0], [0, 0, 2.0], [1.0, 1.0, 0], [0, 4.0, 3.0]])
    m = mem.matrix(4, fallback=fallback)
    torch.testing.assert_close(m[[1, 3]], F.normalize(fallback[[1, 3]], dim=1))
    torch.testing.assert_close(m[[0, 2]], want[[0, 2]])
    # a zero prototype row gives that class no say: equal proto logits, so fusion keeps the CLIP ranking
    probs = dual_path_probs(
        torch.eye(3)[:1], torch.eye(3), torch.tensor([[0, 0, 1.0]]), torch.zeros(3, 3), 10.0, 10.0, 0.5
    )
    torch.testing.assert_close(probs, torch.softmax(10 * torch.eye(3)[:1], dim=1))


def test_raw_features_under_bf16_autocast_feed_the_balanced_pgd(tiny_model):
    # regression: under autocast v came back as a fresh .float() copy that f was not computed from, so the
    # balanced DPGD step (which differentiates the text loss at v) raised "not used in the graph" with bf16
    import functools

    from segpcl.method.anchors import run_pgd

    tiny_model.requires_grad_(False)
    autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with autocast():
        f, v = tiny_model.image_features_and_raw(x)
        f_plain = tiny_model.image_features(x)
    assert f.dtype == v.dtype == torch.float32
    (g,) = torch.autograd.grad(f.sum(), v)  # f is a function of the returned v
    assert g.abs().sum() > 0
    torch.testing.assert_close(f, f_plain, rtol=0, atol=2e-2)
    text = F.normalize(torch.randn(3, tiny_model.embed_dim), dim=-1)
    protos = F.normalize(torch.randn(3, tiny_model.raw_dim), dim=-1)
    delta = run_pgd(
        tiny_model.image_features_and_raw,
        x.detach(),
        torch.tensor([0, 1]),
        text,
        protos,
        50.0,
        steps=2,
        eps=8 / 255,
        gamma=2 / 255,
        lambda_p=1.0,
        balance=True,
        autocast=autocast,
    )
    assert delta.abs().max() > 0
