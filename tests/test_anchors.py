"""DPGD against an independent step-by-step PGD, bounds, seed selection, and no weight gradients."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpcl.method.anchors import build_anchors, run_pgd, select_seeds, select_seeds_per_class


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


# ------------------------------------------------------------------------------ the paper's DPGD (DESIGN §4)


def _ref_seeds_per_class(feats, text, k):
    """numpy: for each class c in order, the k images with the highest cos(f, T_c), ties to the lower index."""
    scores = feats.astype(np.float64) @ text.astype(np.float64).T
    idx, tgt = [], []
    for c in range(text.shape[0]):
        order = sorted(range(len(feats)), key=lambda i: (-scores[i, c], i))[: min(k, len(feats))]
        idx += order
        tgt += [c] * len(order)
    return idx, tgt


@pytest.mark.parametrize("n, c, k", [(12, 4, 3), (5, 3, 5), (5, 2, 9), (1, 3, 2), (30, 6, 1)])
def test_seed_selection_per_class_matches_numpy_with_ties(n, c, k):
    rng = np.random.default_rng(n + c + k)
    text = np.eye(c, 4 + c, dtype=np.float32)  # cos(f, T_c) = f[:, c]: exact, so ties are exact
    feats = rng.choice(np.array([0.0, 0.25, 0.5], np.float32), size=(n, 4 + c))
    idx, tgt = select_seeds_per_class(torch.from_numpy(feats), torch.from_numpy(text), k)
    want_idx, want_tgt = _ref_seeds_per_class(feats, text, k)
    assert idx.tolist() == want_idx and tgt.tolist() == want_tgt


def test_seed_selection_per_class_by_hand():
    text = torch.eye(3)
    feats = torch.tensor([[0.5, 0, 0], [0, 0.9, 0], [0.9, 0, 0], [0, 0, 0.9], [0.5, 0.9, 0]])
    idx, tgt = select_seeds_per_class(feats, text, 2)
    # class 0: 2 (0.9), then 0 and 4 tie at 0.5 -> 0; class 1: 1 and 4 tie -> 1, 4; class 2: 3, then 0/1/2/4 -> 0
    assert idx.tolist() == [2, 0, 1, 4, 3, 0] and tgt.tolist() == [0, 0, 1, 1, 2, 2]


def _kw(**over):
    kw = dict(k_seed=2, steps=2, eps=0.03, gamma=0.01, lambda_p=0.0)
    kw.update(over)
    return kw


@pytest.fixture
def stream_setup(tiny_model):
    torch.manual_seed(0)
    tiny_model.requires_grad_(False)
    x = torch.rand(9, 3, 32, 32)
    text_seen = F.normalize(torch.randn(5, tiny_model.embed_dim), dim=-1)  # 3 old + 2 new classes
    return tiny_model, x, text_seen


@pytest.mark.parametrize("per_class", [True, False])
def test_build_anchors_streaming_equals_selecting_on_everything(stream_setup, per_class):
    model, x, text_seen = stream_setup
    n_old = 3
    with torch.no_grad():
        feats = model.image_features(x)
    select = select_seeds_per_class if per_class else select_seeds
    idx, tgt = select(feats, text_seen[:n_old], 2)
    for batches in ([x], [x[:2], x[2:5], x[5:]], [x[i : i + 1] for i in range(len(x))]):
        anchors = build_anchors(
            model.image_features, batches, text_seen, n_old, None, 30.0, per_class=per_class, pgd=False, **_kw()
        )
        assert anchors.seed_indices.tolist() == idx.tolist()
        assert anchors.targets.tolist() == tgt.tolist()
        assert torch.equal(anchors.images, x[idx])  # pgd=False: the seeds themselves are the anchors
    assert len(anchors) == (n_old * 2 if per_class else 2)


def test_seeds_only_anchors_and_their_teacher_side(stream_setup):
    model, x, text_seen = stream_setup
    anchors = build_anchors(
        model.image_features_and_raw, [x[:4], x[4:]], text_seen, 3, None, 30.0, pgd=False, **_kw(k_seed=3)
    )
    with torch.no_grad():
        f, v = model.image_features_and_raw(x[anchors.seed_indices])
    torch.testing.assert_close(anchors.images, x[anchors.seed_indices], rtol=0, atol=0)
    torch.testing.assert_close(anchors.teacher_logits, 30.0 * f @ text_seen[:3].T, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(anchors.teacher_features, v, rtol=1e-5, atol=1e-5)  # raw space: v, not f
    assert anchors.stats["linf_move_max"] == 0.0 and anchors.stats["anchors"] == 9


def _ref_balanced_pgd(encode, x, y, text, protos, scale, steps, eps, gamma, lambda_p):
    """Per anchor: grad of CE(text) and of 1 - cos(p, P_y) at the prototype-space feature p, each scaled to
    unit norm, combined with lambda_p, backpropagated to delta once; then the signed, clipped step."""
    out = []
    for i in range(len(x)):
        xi, delta = x[i : i + 1], torch.zeros_like(x[i : i + 1])
        for _ in range(steps):
            d = delta.clone().requires_grad_(True)
            f, p = encode(xi + d)
            text_loss = F.cross_entropy(scale * f @ text.T, y[i : i + 1])
            vis_loss = 1 - F.cosine_similarity(p, protos[y[i : i + 1]], dim=1).sum()
            (g_text,) = torch.autograd.grad(text_loss, p, retain_graph=True)
            (g_vis,) = torch.autograd.grad(vis_loss, p, retain_graph=True)
            direction = g_text / g_text.norm() + lambda_p * g_vis / g_vis.norm()
            (g,) = torch.autograd.grad(p, d, grad_outputs=direction)
            delta = torch.clamp(delta - gamma * torch.sign(g), -eps, eps)
            delta = torch.clamp(xi + delta, 0, 1) - xi
        out.append(delta)
    return torch.cat(out)


@pytest.mark.parametrize("lambda_p", [1.0, 0.3])
def test_balanced_dual_target_step_equals_reference(stream_setup, lambda_p):
    model, x, text_seen = stream_setup
    x = x[:4]
    y = torch.tensor([0, 2, 1, 0])
    protos = F.normalize(torch.randn(3, model.raw_dim), dim=-1)
    kw = dict(steps=3, eps=8 / 255, gamma=2 / 255)
    got = run_pgd(
        model.image_features_and_raw, x, y, text_seen[:3], protos, 50.0, lambda_p=lambda_p, balance=True, **kw
    )
    want = _ref_balanced_pgd(model.image_features_and_raw, x, y, text_seen[:3], protos, 50.0, lambda_p=lambda_p, **kw)
    assert torch.allclose(got, want, atol=1e-6)
    plain = run_pgd(model.image_features_and_raw, x, y, text_seen[:3], protos, 50.0, lambda_p=lambda_p, **kw)
    assert not torch.equal(plain, got)  # the plain sum (text gradients ~ s larger) is a different step


def test_text_only_pgd_with_raw_encoder_equals_reference(stream_setup):
    model, x, text_seen = stream_setup
    x, y = x[:3], torch.tensor([1, 0, 2])
    kw = dict(steps=3, eps=8 / 255, gamma=2 / 255)
    protos = F.normalize(torch.randn(3, model.raw_dim), dim=-1)
    got = run_pgd(model.image_features_and_raw, x, y, text_seen[:3], protos, 30.0, lambda_p=0.0, balance=True, **kw)
    want = _reference_pgd(model.image_features, x, y, text_seen[:3], 30.0, **kw)
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("pgd_classes", ["old", "seen"])
def test_pgd_classes_selects_the_cross_entropy_text(stream_setup, pgd_classes):
    model, x, text_seen = stream_setup
    n_old = 3
    kw = _kw(k_seed=1, steps=3, eps=8 / 255, gamma=2 / 255)
    anchors = build_anchors(model.image_features, [x], text_seen, n_old, None, 30.0, pgd_classes=pgd_classes, **kw)
    seeds = x[anchors.seed_indices]
    text = text_seen if pgd_classes == "seen" else text_seen[:n_old]
    want = (
        seeds + _reference_pgd(model.image_features, seeds, anchors.targets, text, 30.0, 3, 8 / 255, 2 / 255)
    ).clamp(0, 1)
    assert torch.allclose(anchors.images, want, atol=1e-6)
    other = text_seen[:n_old] if pgd_classes == "seen" else text_seen
    not_want = seeds + _reference_pgd(model.image_features, seeds, anchors.targets, other, 30.0, 3, 8 / 255, 2 / 255)
    assert not torch.allclose(anchors.images, not_want.clamp(0, 1), atol=1e-6)


@pytest.mark.parametrize("pgd_classes", ["old", "seen"])
def test_anchor_statistics_by_hand(stream_setup, pgd_classes):
    model, x, text_seen = stream_setup
    n_old = 3
    anchors = build_anchors(
        model.image_features,
        [x[:5], x[5:]],
        text_seen,
        n_old,
        None,
        30.0,
        per_class=False,
        pgd_classes=pgd_classes,
        **_kw(k_seed=5, steps=4, eps=0.05, gamma=0.02),
    )
    seeds = x[anchors.seed_indices]
    t = anchors.targets.tolist()
    with torch.no_grad():
        seed_logits = (30.0 * model.image_features(seeds) @ text_seen.T).tolist()
        anchor_logits = (30.0 * model.image_features(anchors.images) @ text_seen.T).tolist()
    n_pgd = n_old if pgd_classes == "old" else len(text_seen)
    moves = [float((anchors.images[i] - seeds[i]).abs().max()) for i in range(len(t))]

    def p_target(logits):
        return sum(_softmax_list(row[:n_pgd])[c] for row, c in zip(logits, t, strict=True)) / len(t)

    def crossed(logits):
        return sum(max(range(len(row)), key=row.__getitem__) == c for row, c in zip(logits, t, strict=True)) / len(t)

    counts = [t.count(c) for c in range(n_old)]
    want = {
        "anchors": len(t),
        "linf_move_mean": sum(moves) / len(moves),
        "linf_move_max": max(moves),
        "p_target_seeds": p_target(seed_logits),
        "p_target_anchors": p_target(anchor_logits),
        "crossed_seeds": crossed(seed_logits),
        "crossed_anchors": crossed(anchor_logits),
        "anchors_per_old_class_min": min(counts),
        "anchors_per_old_class_mean": sum(counts) / n_old,
        "anchors_per_old_class_max": max(counts),
    }
    assert set(anchors.stats) == set(want)
    for key, value in want.items():
        assert anchors.stats[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert 0 < anchors.stats["linf_move_max"] <= 0.05 + 1e-6
    assert anchors.stats["p_target_anchors"] > anchors.stats["p_target_seeds"]  # PGD pushed towards the targets


def _softmax_list(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def test_build_anchors_sends_no_gradient_into_the_weights(tiny_model):
    tiny_model.requires_grad_(True)
    torch.manual_seed(1)
    x = torch.rand(4, 3, 32, 32)
    text_seen = F.normalize(torch.randn(3, tiny_model.embed_dim), dim=-1)
    protos = F.normalize(torch.randn(2, tiny_model.raw_dim), dim=-1)
    build_anchors(
        tiny_model.image_features_and_raw, [x[:2], x[2:]], text_seen, 2, protos, 30.0, **_kw(lambda_p=1.0, balance=True)
    )
    assert all(p.grad is None for p in tiny_model.parameters())
