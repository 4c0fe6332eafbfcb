"""ACGD, TSGR, prototype migration and the dual path against independent references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segpcl.method.acgd import acgd_loss
from segpcl.method.prototypes import PrototypeMemory, dual_path_probs
from segpcl.method.tsgr import TextGeometryRegularizer


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5, 20.0])
def test_acgd_equals_kl_div(tau):
    torch.manual_seed(0)
    s = (torch.randn(7, 5) * 3).requires_grad_(True)
    t = torch.randn(7, 5) * 3
    got = acgd_loss(s, t, tau)
    want = tau**2 * F.kl_div(F.log_softmax(s / tau, -1), F.softmax(t / tau, -1), reduction="batchmean")
    assert torch.allclose(got, want, atol=1e-6)
    (g1,) = torch.autograd.grad(got, s)
    (g2,) = torch.autograd.grad(want, s)
    assert torch.allclose(g1, g2, atol=1e-6)


def _unit(x):
    return F.normalize(x, dim=-1)


def test_tsgr_zero_when_unchanged_and_positive_after_change():
    torch.manual_seed(0)
    text = _unit(torch.randn(6, 8))
    reg = TextGeometryRegularizer(text, k=2)
    assert reg.n_edges >= 6
    assert float(reg.loss(text)) == pytest.approx(0.0, abs=1e-10)
    moved = _unit(text + 0.3 * torch.randn(6, 8))
    assert float(reg.loss(moved)) > 1e-4


def test_tsgr_matches_a_direct_computation():
    torch.manual_seed(1)
    text = _unit(torch.randn(5, 4))
    student = _unit(torch.randn(5, 4)).requires_grad_(True)
    reg = TextGeometryRegularizer(text, k=None, threshold=-2.0)  # every pair
    sim_t, sim_s = text @ text.T, student @ student.T
    iu = torch.triu_indices(5, 5, 1)
    want = ((sim_s[iu[0], iu[1]] - sim_t[iu[0], iu[1]]) ** 2).mean()
    assert torch.allclose(reg.loss(student), want, atol=1e-6)


def test_migration_moves_prototypes_toward_the_anchor_drift():
    mem = PrototypeMemory(3)
    mem.add(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), torch.tensor([0, 1]))
    before = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0]])
    drift = torch.tensor([0.0, 0.0, 0.5])
    shifts = mem.migrate(before, before + drift, classes=[0, 1], mode="gaussian", sigma=0.5)
    assert torch.allclose(shifts, drift.expand(2, 3), atol=1e-5)  # every anchor drifts the same way
    ids, means = mem.bank.means()
    assert np.allclose(means[0], [1, 0, 0.5], atol=1e-5)


def test_proximity_migration_shrinks_with_the_distance_to_the_nearest_anchor():
    mem = PrototypeMemory(3)
    mem.add(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), torch.tensor([0, 1]))
    before = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0]])
    drift = torch.tensor([0.0, 0.0, 0.5])
    shifts = mem.migrate(before, before + drift, classes=[0, 1], sigma=0.5)  # default mode: proximity
    near = np.exp(-((0.9**2 + 0.9**2) / (2 * 0.5**2)))  # class 1's nearest anchor is at squared distance 1.62
    assert torch.allclose(shifts[0], drift, atol=1e-5)  # an anchor sits on class 0: full move
    assert torch.allclose(shifts[1], float(near) * drift, atol=1e-5)


def test_gaussian_migration_weights_near_anchors_more():
    mem = PrototypeMemory(2)
    mem.add(torch.tensor([[0.0, 0.0]]), torch.tensor([0]))
    before = torch.tensor([[0.1, 0.0], [3.0, 0.0]])
    after = before + torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    shift = mem.migrate(before, after, classes=[0], mode="gaussian", sigma=0.5)[0]
    assert shift[0] > 0.99 and shift[1] < 0.01


def test_dual_path_beta_zero_is_clip_path():
    torch.manual_seed(0)
    f, t, p = _unit(torch.randn(4, 8)), _unit(torch.randn(3, 8)), _unit(torch.randn(3, 8))
    clip = F.softmax(20 * f @ t.T, -1)
    for fusion in ("logits", "probs"):
        assert torch.allclose(dual_path_probs(f, t, f, p, 20.0, 10.0, 0.0, fusion=fusion), clip)
        assert torch.allclose(dual_path_probs(f, t, None, None, 20.0, 10.0, 0.3, fusion=fusion), clip)
    fused = dual_path_probs(f, t, f, p, 20.0, 10.0, 0.3, fusion="probs")
    assert torch.allclose(fused, 0.7 * clip + 0.3 * F.softmax(10 * f @ p.T, -1))
    assert torch.allclose(fused.sum(1), torch.ones(4))
    fused = dual_path_probs(f, t, f, p, 20.0, 10.0, 0.3, fusion="logits")
    assert torch.allclose(fused, F.softmax(20 * f @ t.T + 0.3 * 10 * f @ p.T, -1))
