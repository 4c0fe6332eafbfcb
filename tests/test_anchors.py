"""DPGD against an independent step-by-step PGD, bounds, seed selection, and no weight gradients."""

import pytest
import torch
import torch.nn.functional as F

from segpcl.method.anchors import build_anchors, run_pgd, select_seeds


def _reference_pgd(encode, x, y, text, scale, steps, eps, gamma):
    """Text-only PGD written out plainly, one sample at a time."""
    out = []
    for i in range(len(x)):
        xi, delta = x[i : i + 1], torch.zeros_like(x[i : i + 1])
        for _ in range(steps):
            d = delta.clone().requires_grad_(True)
            logits = scale * encode(xi + d) @ text.T
            loss = F.cross_entropy(logits, y[i : i + 1])
            (g,) = torch.autograd.grad(loss, d)
            delta = torch.clamp(delta - gamma * torch.sign(g), -eps, eps)
            delta = torch.clamp(xi + delta, 0, 1) - xi
        out.append(delta)
    return torch.cat(out)


@pytest.fixture
def setup(tiny_model):
    torch.manual_seed(0)
    tiny_model.requires_grad_(False)
    x = torch.rand(5, 3, 32, 32)
    x[0, :, :4] = 1.0  # saturated pixels exercise the [0, 1] clamp
    text = F.normalize(torch.randn(4, tiny_model.embed_dim), dim=-1)
    y = torch.tensor([0, 1, 2, 3, 1])
    return tiny_model, x, y, text


def test_text_only_pgd_equals_reference(setup):
    model, x, y, text = setup
    kw = dict(steps=4, eps=8 / 255, gamma=2 / 255)
    got = run_pgd(model.image_features, x, y, text, None, 30.0, lambda_p=0.0, **kw)
    want = _reference_pgd(model.image_features, x, y, text, 30.0, **kw)
    assert torch.allclose(got, want, atol=1e-6)


def test_perturbation_bounded_and_pixels_valid(setup):
    model, x, y, text = setup
    protos = F.normalize(torch.randn(4, model.embed_dim), dim=-1)
    delta = run_pgd(model.image_features, x, y, text, protos, 30.0, steps=6, eps=0.03, gamma=0.02, lambda_p=1.0)
    assert delta.abs().max() <= 0.03 + 1e-6
    adv = x + delta
    assert adv.min() >= 0 and adv.max() <= 1
    assert delta.abs().max() > 0.01  # it did move


def test_dual_target_moves_toward_the_prototype(setup):
    model, x, y, text = setup
    protos = F.normalize(torch.randn(4, model.embed_dim), dim=-1)
    kw = dict(steps=8, eps=0.1, gamma=0.02)
    d_text = run_pgd(model.image_features, x, y, text, protos, 30.0, lambda_p=0.0, **kw)
    d_dual = run_pgd(model.image_features, x, y, text, protos, 30.0, lambda_p=50.0, **kw)
    with torch.no_grad():
        cos = lambda d: (model.image_features(x + d) * protos[y]).sum(1).mean()  # noqa: E731
        assert cos(d_dual) > cos(d_text)


def test_no_parameter_receives_a_gradient(tiny_model):
    tiny_model.requires_grad_(True)  # even with trainable weights, PGD differentiates w.r.t. delta only
    x = torch.rand(3, 3, 32, 32)
    text = F.normalize(torch.randn(2, tiny_model.embed_dim), dim=-1)
    run_pgd(tiny_model.image_features, x, torch.tensor([0, 1, 0]), text, None, 10.0, 3, 0.03, 0.01, 0.0)
    assert all(p.grad is None for p in tiny_model.parameters())


def test_early_stop_freezes_samples_already_assigned(setup):
    model, x, y, text = setup
    delta = run_pgd(model.image_features, x, y, text, None, 30.0, 5, 0.03, 0.01, 0.0, early_stop_margin=-1e9)
    assert torch.count_nonzero(delta) == 0  # every sample already "assigned" with margin -inf


def test_seed_selection_ties_prefer_lower_index():
    text = torch.eye(3)
    feats = torch.tensor([[0.5, 0, 0], [0, 0.9, 0], [0.9, 0, 0], [0, 0, 0.9], [0, 0.2, 0]])
    idx, tgt = select_seeds(feats, text, 3)
    assert idx.tolist() == [1, 2, 3] and tgt.tolist() == [1, 0, 2]


def test_build_anchors_streams_batches_like_select_seeds(setup):
    model, x, y, text = setup
    with torch.no_grad():
        idx, tgt = select_seeds(model.image_features(x), text, 3)
    anchors = build_anchors(
        model.image_features,
        [x[:2], x[2:4], x[4:]],
        text,
        len(text),
        None,
        30.0,
        k_seed=3,
        steps=2,
        eps=0.03,
        gamma=0.01,
        lambda_p=0.0,
        per_class=False,
    )
    assert anchors.seed_indices.tolist() == idx.tolist()
    assert anchors.targets.tolist() == tgt.tolist()
    assert anchors.images.shape == (3, 3, 32, 32)
    assert (anchors.images - x[idx]).abs().max() <= 0.03 + 1e-6
    with torch.no_grad():
        f = model.image_features(anchors.images)
    assert torch.allclose(anchors.teacher_features, f, atol=1e-5)
    assert torch.allclose(anchors.teacher_logits, 30.0 * f @ text.T, atol=1e-4)
