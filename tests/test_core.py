"""The native core (segpcl._core) against independent numpy references, and its input checking."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from segpcl import _core  # built by `maturin develop`; a missing extension must fail, not skip

# --------------------------------------------------------------------------------------------------
# numpy references, written from the contract in _core.pyi
# --------------------------------------------------------------------------------------------------


def ref_key_edges(sim, k, threshold=None):
    sim = np.asarray(sim, dtype=np.float32)
    c = sim.shape[0]
    t = sim.T
    s = np.where(sim == t, sim, np.float32(0.5) * sim + np.float32(0.5) * t).astype(np.float32)
    keep = np.zeros((c, c), dtype=bool)
    if k is not None and c > 1:
        kk = min(k, c - 1)
        neg = -s
        np.fill_diagonal(neg, np.inf)  # never itself
        order = np.argsort(neg, axis=1, kind="stable")[:, :kk]  # stable: ties toward the lower index
        keep[np.repeat(np.arange(c), kk), order.ravel()] = True
    if threshold is not None:
        keep |= s.astype(np.float64) >= threshold
        np.fill_diagonal(keep, False)
    keep |= keep.T
    i, j = np.nonzero(np.triu(keep, 1))
    return np.stack([i, j], axis=1).astype(np.int64).reshape(-1, 2), s[i, j]


def ref_gaussian_shifts(protos, before, after, sigma):
    p = protos.astype(np.float64)
    b = before.astype(np.float64)
    d = after.astype(np.float64) - b
    d2 = ((p[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    lw = -d2 / (2 * sigma**2)
    lw -= lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    return (w @ d) / w.sum(axis=1, keepdims=True)


def ref_target_shifts(classes, before, after, targets):
    d = after.astype(np.float64) - before.astype(np.float64)
    out = np.zeros((len(classes), before.shape[1]))
    for row, c in enumerate(classes):
        hit = targets == c
        if hit.any():
            out[row] = d[hit].mean(axis=0)
    return out


def ref_proximity_shifts(protos, before, after, sigma):
    """Gaussian weights w_ac = exp(-||b_a - P_c||^2 / (2 sigma^2)); shift = (sum_a w d_a / sum_a w) * max_a w."""
    p = protos.astype(np.float64)
    b = before.astype(np.float64)
    d = after.astype(np.float64) - b
    d2 = ((p[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma**2))
    return (w @ d) / w.sum(axis=1, keepdims=True) * w.max(axis=1, keepdims=True)


def ref_neighbors(sim, roots, k):
    """For each root r: the min(k, C-1) columns j != r by descending sim[r, j], ties to the lower j."""
    sim = np.asarray(sim, dtype=np.float32)
    c = sim.shape[0]
    kk = min(k, c - 1)
    out = np.zeros((len(roots), kk), dtype=np.int64)
    for i, r in enumerate(roots):
        others = [j for j in range(c) if j != r]
        others.sort(key=lambda j: (-float(sim[r, j]), j))
        out[i] = others[:kk]
    return out


def assert_same_edges(got, want):
    edges, weights = got
    want_edges, want_weights = want
    assert edges.dtype == np.int64 and edges.ndim == 2 and edges.shape[1] == 2
    assert weights.dtype == np.float32 and weights.shape == (edges.shape[0],)
    np.testing.assert_array_equal(edges, want_edges)
    np.testing.assert_array_equal(weights, want_weights)


# --------------------------------------------------------------------------------------------------
# select_key_edges
# --------------------------------------------------------------------------------------------------


def test_key_edges_match_reference_on_random_cases():
    rng = np.random.default_rng(0)
    for case in range(400):
        c = int(rng.integers(1, 30))
        if case % 2:
            sim = rng.integers(0, int(rng.integers(1, 5)), size=(c, c)).astype(np.float32)  # many ties
        else:
            sim = rng.standard_normal((c, c)).astype(np.float32)
        if case % 3:
            sim = np.triu(sim) + np.triu(sim, 1).T  # symmetric; otherwise asymmetric
        k = None if case % 5 == 0 else int(rng.integers(1, c + 3))
        threshold = float(np.round(rng.uniform(-1, 3), 1)) if (k is None or case % 4 == 0) else None
        assert_same_edges(_core.select_key_edges(sim, k, threshold), ref_key_edges(sim, k, threshold))


@pytest.mark.parametrize("c", [1, 2, 3, 50])
@pytest.mark.parametrize("k", [1, 2, 10**6])
def test_key_edges_small_sizes_and_large_k(c, k):
    sim = np.random.default_rng(c).random((c, c)).astype(np.float32)
    got = _core.select_key_edges(sim, k)
    assert_same_edges(got, ref_key_edges(sim, k))
    if k >= c - 1:
        assert len(got[0]) == c * (c - 1) // 2  # all pairs


def test_key_edges_ties_go_to_the_lower_index():
    sim = np.ones((5, 5), dtype=np.float32)
    edges, _ = _core.select_key_edges(sim, 1)
    # every node's single nearest is the lowest other index
    np.testing.assert_array_equal(edges, [[0, 1], [0, 2], [0, 3], [0, 4]])


def test_key_edges_asymmetric_uses_the_mean():
    sim = np.array([[1, 0.2, 0.9], [0.6, 1, 0.1], [0.1, 0.1, 1]], dtype=np.float32)
    edges, weights = _core.select_key_edges(sim, 1)
    # s01 = 0.4, s02 = 0.5, s12 = 0.1: 0 -> 2, 1 -> 0, 2 -> 0
    np.testing.assert_array_equal(edges, [[0, 1], [0, 2]])
    np.testing.assert_array_equal(weights, np.float32([0.4, 0.5]))


def test_key_edges_threshold_only_and_union():
    sim = np.array([[1, 0.8, 0.3], [0.8, 1, 0.5], [0.3, 0.5, 1]], dtype=np.float32)
    edges, _ = _core.select_key_edges(sim, None, threshold=0.5)
    np.testing.assert_array_equal(edges, [[0, 1], [1, 2]])
    edges, _ = _core.select_key_edges(sim, None, threshold=0.9)
    assert edges.shape == (0, 2)
    edges, _ = _core.select_key_edges(sim, 1, threshold=0.3)
    np.testing.assert_array_equal(edges, [[0, 1], [0, 2], [1, 2]])


def test_key_edges_large_matrix_threaded_path():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    sim = np.round(x @ x.T, 1)  # rounded: ties across the parallel row split
    for k, t in [(3, None), (40, None), (5, 8.0)]:
        assert_same_edges(_core.select_key_edges(sim, k, t), ref_key_edges(sim, k, t))


def test_key_edges_accepts_convertible_arrays():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((9, 9))
    want = _core.select_key_edges(base.astype(np.float32), 3)
    for variant in (
        base,  # float64
        base.astype(np.float32).tolist(),  # nested lists
        np.asfortranarray(base.astype(np.float32)),  # non C-contiguous
        base.astype(">f4"),  # non-native byte order
    ):
        assert_same_edges(_core.select_key_edges(variant, 3), want)
    strided = np.zeros((9, 18), dtype=np.float32)
    strided[:, ::2] = base
    assert_same_edges(_core.select_key_edges(strided[:, ::2], 3), want)
    ints = rng.integers(0, 3, size=(6, 6))
    assert_same_edges(_core.select_key_edges(ints, 2), ref_key_edges(ints, 2))


_SIM = np.eye(3, dtype=np.float32)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros(4, np.float32), 1), {}, "sim"),  # 1-D
        ((np.zeros((2, 2, 2), np.float32), 1), {}, "sim"),  # 3-D
        ((np.zeros((2, 3), np.float32), 1), {}, r"\[C, C\]"),  # not square
        ((np.array([[0, np.nan], [0, 0]], np.float32), 1), {}, "finite"),
        ((np.array([[0, np.inf], [0, 0]], np.float32), 1), {}, "finite"),
        ((_SIM, 0), {}, "k must be"),
        ((_SIM, -2), {}, "k must be"),
        ((_SIM, None), {}, "threshold"),
        ((_SIM, 1), {"threshold": float("nan")}, "threshold"),
        ((np.array([["a", "b"], ["c", "d"]]), 1), {}, "dtype"),
        ((np.ones((2, 2), dtype=bool), 1), {}, "dtype"),
        ((np.ones((2, 2), dtype=np.complex64), 1), {}, "dtype"),
        (([[1.0, 2.0], [3.0]], 1), {}, "sim"),  # ragged
    ],
)
def test_key_edges_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _core.select_key_edges(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# select_neighbors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 2, 3, 7, 16, 41])
@pytest.mark.parametrize("k", [1, 2, 5, 10, 40, 100])
@pytest.mark.parametrize("seed", [0, 1])
def test_neighbors_match_numpy_with_ties(c, k, seed):
    rng = np.random.default_rng(seed * 1000 + c * 10 + k)
    sim = rng.choice(np.array([-0.5, 0.0, 0.25, 0.5, 1.0], np.float32), size=(c, c))  # many ties
    roots = np.concatenate([rng.permutation(c), rng.integers(0, c, size=3)]).astype(np.int64)  # repeats
    got = _core.select_neighbors(sim, roots, k)
    want = ref_neighbors(sim, roots, k)
    assert got.dtype == np.int64 and got.shape == (len(roots), min(k, c - 1))
    np.testing.assert_array_equal(got, want)


def test_neighbors_small_cases_by_hand():
    sim = np.array([[9.0, 1.0, 2.0, 1.0], [0.0, 9.0, 0.0, 0.0], [3.0, 3.0, 9.0, 3.0], [5.0, 4.0, 4.0, 9.0]], np.float32)
    np.testing.assert_array_equal(_core.select_neighbors(sim, [0], 2), [[2, 1]])  # tie 1 vs 3: lower index
    np.testing.assert_array_equal(_core.select_neighbors(sim, [1, 2], 2), [[0, 2], [0, 1]])
    np.testing.assert_array_equal(_core.select_neighbors(sim, [3, 3], 3), [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(_core.select_neighbors(sim, [3], 50), [[0, 1, 2]])  # k > C - 1
    np.testing.assert_array_equal(_core.select_neighbors(sim, [0], 3), [[2, 1, 3]])  # k == C - 1
    # the row is read as given: sim[1, 0] = 0 although sim[0, 1] = 1
    np.testing.assert_array_equal(_core.select_neighbors(sim, [1], 1), [[0]])
    one = _core.select_neighbors(np.zeros((1, 1), np.float32), [0, 0], 3)
    assert one.shape == (2, 0) and one.dtype == np.int64
    two = _core.select_neighbors(np.array([[0, -1], [7, 0]], np.float32), [1, 0], 4)
    np.testing.assert_array_equal(two, [[0], [1]])
    empty = _core.select_neighbors(sim, np.zeros(0, np.int64), 2)
    assert empty.shape == (0, 2)


def test_neighbors_never_pick_the_root_even_when_it_is_best():
    sim = np.full((5, 5), -1.0, np.float32)
    np.fill_diagonal(sim, 10.0)
    got = _core.select_neighbors(sim, np.arange(5), 4)
    for r, row in enumerate(got):
        assert r not in row and sorted(row) == [j for j in range(5) if j != r]


@pytest.mark.parametrize(
    ("sim", "roots", "k", "match"),
    [
        (_SIM, [0], 0, "k must be"),
        (_SIM, [0], -1, "k must be"),
        (_SIM, [len(_SIM)], 1, "roots"),
        (_SIM, [-1], 1, "roots"),
        (_SIM, [[0]], 1, "roots"),
        (np.zeros((2, 3), np.float32), [0], 1, r"\[C, C\]"),
        (np.zeros(4, np.float32), [0], 1, "sim"),
        (np.array([[0, np.nan], [0, 0]], np.float32), [0], 1, "finite"),
        (np.array([[0, 0], [np.inf, 0]], np.float32), [0], 1, "finite"),
        (_SIM, np.array([0.0]), 1, "dtype"),
    ],
)
def test_neighbors_bad_input(sim, roots, k, match):
    with pytest.raises(ValueError, match=match):
        _core.select_neighbors(sim, roots, k)


# --------------------------------------------------------------------------------------------------
# PrototypeBank
# --------------------------------------------------------------------------------------------------


def stream(rng, n_batches=6, dim=5):
    """Batches with class ids appearing over time, in no order."""
    for b in range(n_batches):
        n = int(rng.integers(1, 40))
        labels = rng.choice([3, 0, 11, 7, 2 + b], size=n).astype(np.int64)
        yield rng.standard_normal((n, dim)).astype(np.float32) + labels[:, None], labels


def test_bank_means_and_counts_match_numpy():
    rng = np.random.default_rng(0)
    bank = _core.PrototypeBank(5)
    feats, labels = [], []
    for f, y in stream(rng):
        bank.update(f, y)
        feats.append(f)
        labels.append(y)
    f, y = np.concatenate(feats), np.concatenate(labels)
    ids = np.unique(y)
    want = np.stack([f[y == c].astype(np.float64).mean(0) for c in ids])
    got_ids, got = bank.means()
    assert got_ids.dtype == np.int64 and got.dtype == np.float32
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    count_ids, counts = bank.counts()
    np.testing.assert_array_equal(count_ids, ids)
    np.testing.assert_array_equal(counts, [(y == c).sum() for c in ids])
    assert len(bank) == len(ids) and bank.dim == 5
    assert 11 in bank and 1 not in bank and np.int64(3) in bank and "x" not in bank
    assert repr(bank) == f"PrototypeBank(dim=5, classes={len(ids)})"


def test_bank_empty_and_zero_samples():
    bank = _core.PrototypeBank(4)
    ids, means = bank.means()
    assert ids.shape == (0,) and means.shape == (0, 4)
    bank.update(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    bank.update(np.zeros((0, 4)), [])  # an empty list converts too
    assert len(bank) == 0


def test_set_means_is_exact_and_combines_with_update():
    bank = _core.PrototypeBank(3)
    bank.update(np.ones((4, 3), np.float32), [5, 5, 5, 5])
    protos = np.array([[0.1, -2.7, 3e-5], [1.5, 2.5, 3.5]], np.float32)
    bank.set_means([5, 9], protos)
    np.testing.assert_array_equal(bank.means()[1], protos)
    np.testing.assert_array_equal(bank.counts()[1], [4, 1])  # kept / new class counts 1
    bank.update(np.array([[3.5, 4.5, 5.5]], np.float32), [9])
    np.testing.assert_allclose(bank.means()[1][1], [2.5, 3.5, 4.5], rtol=1e-6)


def make_bank(rng, n_classes, dim, scale=1.0):
    bank = _core.PrototypeBank(dim)
    ids = rng.permutation(100)[:n_classes].astype(np.int64)
    protos = (scale * rng.standard_normal((n_classes, dim))).astype(np.float32)
    bank.set_means(ids, protos)
    order = np.argsort(ids)
    return bank, ids[order], protos[order]


@pytest.mark.parametrize(
    ("n_classes", "n_anchors", "dim", "sigma", "offset"),
    [
        (6, 20, 8, 1.0, 0.0),
        (1, 1, 3, 0.3, 0.0),
        (12, 50, 16, 0.2, 0.0),
        (30, 200, 64, 2.0, 0.0),
        (5, 30, 6, 1.0, 25.0),
    ],
)
def test_gaussian_migration_matches_numpy(n_classes, n_anchors, dim, sigma, offset):
    rng = np.random.default_rng(n_anchors)
    bank, ids, protos = make_bank(rng, n_classes, dim)
    before = (rng.standard_normal((n_anchors, dim)) + offset).astype(np.float32)  # offset: far away
    after = (before + 0.1 * rng.standard_normal((n_anchors, dim))).astype(np.float32)
    want = ref_gaussian_shifts(protos, before, after, sigma)
    shifts = bank.migrate(before, after, sigma)
    assert shifts.dtype == np.float32 and shifts.shape == (n_classes, dim)
    np.testing.assert_allclose(shifts, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bank.means()[1], protos + want, rtol=1e-5, atol=1e-5)


def test_far_away_anchors_do_not_underflow():
    bank = _core.PrototypeBank(2)
    bank.set_means([0], [[0.0, 0.0]])
    before = np.array([[1000.0, 0.0], [1001.0, 0.0]], np.float32)
    after = before + np.array([[0.0, 1.0], [0.0, 3.0]], np.float32)
    shifts = bank.migrate(before, after, sigma=0.1)  # plain weights are exp(-5e7) = 0
    np.testing.assert_allclose(shifts, [[0.0, 1.0]], atol=1e-6)  # the nearest anchor wins


def test_gaussian_migration_of_a_class_subset():
    rng = np.random.default_rng(5)
    bank, ids, protos = make_bank(rng, 8, 6)
    before = rng.standard_normal((25, 6)).astype(np.float32)
    after = (before + 0.2).astype(np.float32)
    subset = [ids[5], ids[1], ids[6]]
    shifts = bank.migrate(before, after, 0.8, classes=subset)
    rows = [5, 1, 6]
    np.testing.assert_allclose(shifts, ref_gaussian_shifts(protos[rows], before, after, 0.8), atol=1e-5)
    means = bank.means()[1]
    unmoved = [r for r in range(8) if r not in rows]
    np.testing.assert_array_equal(means[unmoved], protos[unmoved])
    np.testing.assert_allclose(means[rows], protos[rows] + shifts, atol=1e-6)


def test_target_migration_matches_numpy():
    rng = np.random.default_rng(6)
    bank, ids, protos = make_bank(rng, 7, 5)
    before = rng.standard_normal((40, 5)).astype(np.float32)
    after = (before + rng.standard_normal((40, 5))).astype(np.float32)
    targets = rng.choice(ids[:5], size=40)  # the last two classes get no anchors
    targets[0] = 1000  # an anchor whose target is not in the bank moves nothing
    shifts = bank.migrate(before, after, 1.0, mode="target", anchor_targets=targets)
    want = ref_target_shifts(ids, before, after, targets)
    np.testing.assert_allclose(shifts, want, rtol=1e-5, atol=1e-6)
    assert not shifts[5:].any()
    np.testing.assert_allclose(bank.means()[1], protos + want, atol=1e-5)
    subset = ids[[2, 0]]
    shifts = bank.migrate(before, after, 1.0, mode="target", anchor_targets=targets, classes=subset)
    np.testing.assert_allclose(shifts, ref_target_shifts(subset, before, after, targets), atol=1e-6)


@pytest.mark.parametrize(
    ("n_classes", "n_anchors", "dim", "sigma", "offset"),
    [(6, 20, 8, 1.0, 0.0), (1, 1, 3, 0.3, 0.0), (12, 50, 16, 2.0, 0.0), (30, 200, 64, 4.0, 0.0), (5, 30, 6, 3.0, 2.0)],
)
def test_proximity_migration_matches_numpy(n_classes, n_anchors, dim, sigma, offset):
    rng = np.random.default_rng(n_anchors + 1)
    bank, ids, protos = make_bank(rng, n_classes, dim)
    before = (rng.standard_normal((n_anchors, dim)) + offset).astype(np.float32)
    after = (before + 0.1 * rng.standard_normal((n_anchors, dim))).astype(np.float32)
    want = ref_proximity_shifts(protos, before, after, sigma)
    shifts = bank.migrate(before, after, sigma, mode="proximity")
    assert shifts.dtype == np.float32 and shifts.shape == (n_classes, dim)
    np.testing.assert_allclose(shifts, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bank.means()[1], protos + want, rtol=1e-5, atol=1e-5)
    # the proximity shift is the Gaussian one times the nearest anchor's kernel value, <= 1
    gauss = ref_gaussian_shifts(protos, before, after, sigma)
    assert np.all(np.linalg.norm(want, axis=1) <= np.linalg.norm(gauss, axis=1) + 1e-12)


def test_proximity_far_prototype_barely_moves_near_one_moves_fully():
    bank = _core.PrototypeBank(2)
    bank.set_means([0, 1, 2], [[0.0, 0.0], [0.0, 30.0], [1.0, 0.0]])
    before = np.array([[0.0, 0.0], [0.2, 0.0]], np.float32)
    after = before + np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    shifts = bank.migrate(before, after, sigma=1.0, mode="proximity")
    np.testing.assert_allclose(shifts[0], [0.0, 1.0], atol=1e-6)  # an anchor on the class: max w = 1
    assert np.abs(shifts[1]).max() < 1e-12  # 30 sigma from every anchor: exp(-450)
    np.testing.assert_allclose(shifts[2], [0.0, np.exp(-(0.8**2) / 2)], rtol=1e-5)  # nearest at 0.8
    gauss = _core.PrototypeBank(2)
    gauss.set_means([1], [[0.0, 30.0]])
    np.testing.assert_allclose(gauss.migrate(before, after, sigma=1.0), [[0.0, 1.0]], atol=1e-6)  # renormalised


def test_proximity_migration_of_a_class_subset():
    rng = np.random.default_rng(9)
    bank, ids, protos = make_bank(rng, 8, 6)
    before = rng.standard_normal((25, 6)).astype(np.float32)
    after = (before + 0.2).astype(np.float32)
    rows = [6, 0, 3]
    shifts = bank.migrate(before, after, 2.0, mode="proximity", classes=ids[rows])
    np.testing.assert_allclose(shifts, ref_proximity_shifts(protos[rows], before, after, 2.0), rtol=1e-4, atol=1e-6)
    means = bank.means()[1]
    unmoved = [r for r in range(8) if r not in rows]
    np.testing.assert_array_equal(means[unmoved], protos[unmoved])


def test_zero_anchors_move_nothing():
    rng = np.random.default_rng(7)
    bank, _, protos = make_bank(rng, 4, 3)
    empty = np.zeros((0, 3), np.float32)
    for mode in ("gaussian", "proximity", "target"):
        shifts = bank.migrate(empty, empty, 1.0, mode=mode, anchor_targets=np.zeros(0, np.int64))
        assert shifts.shape == (4, 3) and not shifts.any()
    np.testing.assert_array_equal(bank.means()[1], protos)


def test_state_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    bank = _core.PrototypeBank(5)
    for f, y in stream(rng):
        bank.update(f, y)
    bank.set_means([42], np.ones((1, 5), np.float32))
    state = bank.state_dict()
    assert set(state) == {"dim", "class_ids", "sums", "counts"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.savez(tmp_path / "bank.npz", **state)
    with np.load(tmp_path / "bank.npz") as loaded:
        back = _core.PrototypeBank.from_state(dict(loaded))
    for a, b in zip(back.means() + back.counts(), bank.means() + bank.counts(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.dim == 5
    back.update(np.ones((1, 5), np.float32), [42])  # the restored bank keeps working
    assert back.counts()[1][list(back.means()[0]).index(42)] == 2


def test_bank_is_not_picklable():
    with pytest.raises(TypeError):
        pickle.dumps(_core.PrototypeBank(2))


def test_calls_from_threads_agree():
    rng = np.random.default_rng(9)
    sim = rng.standard_normal((300, 300)).astype(np.float32)
    want = _core.select_key_edges(sim, 5)
    results = [None] * 4

    def work(slot):
        results[slot] = _core.select_key_edges(sim, 5)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        assert_same_edges(got, want)


def test_build_info():
    info = _core.build_info()
    assert info["version"] == _core.__version__
    assert info["profile"] in ("release", "debug")


# --------------------------------------------------------------------------------------------------
# PrototypeBank: every bad input raises ValueError and leaves the bank unchanged
# --------------------------------------------------------------------------------------------------

F = np.zeros((2, 3), np.float32)
A = np.zeros((4, 3), np.float32)
BAD_CALLS = {
    "features 1-D": ("update", (np.zeros(3, np.float32), [0]), {}),
    "features dim mismatch": ("update", (np.zeros((2, 4), np.float32), [0, 1]), {}),
    "labels 2-D": ("update", (F, [[0, 1]]), {}),
    "labels length mismatch": ("update", (F, [0, 1, 2]), {}),
    "labels negative": ("update", (F, [0, -1]), {}),
    "labels float dtype": ("update", (F, np.array([0.0, 1.0])), {}),
    "labels uint64 overflow": ("update", (F, np.array([0, 2**63], dtype=np.uint64)), {}),
    "features NaN": ("update", (np.array([[0, np.nan, 0], [0, 0, 0]], np.float32), [0, 1]), {}),
    "features inf": ("update", (np.array([[0, np.inf, 0], [0, 0, 0]], np.float32), [0, 1]), {}),
    "features float64 overflow": ("update", (np.full((2, 3), 1e300), [0, 1]), {}),
    "features string dtype": ("update", (np.array([["a"] * 3] * 2), [0, 1]), {}),
    "set_means repeated id": ("set_means", ([4, 4], F), {}),
    "set_means length mismatch": ("set_means", ([4], F), {}),
    "set_means dim mismatch": ("set_means", ([4, 5], np.zeros((2, 2), np.float32)), {}),
    "set_means NaN": ("set_means", ([4, 5], np.full((2, 3), np.nan, np.float32)), {}),
    "set_means negative id": ("set_means", ([4, -5], F), {}),
    "sigma zero": ("migrate", (A, A, 0.0), {}),
    "sigma negative": ("migrate", (A, A, -1.0), {}),
    "sigma NaN": ("migrate", (A, A, float("nan")), {}),
    "sigma inf": ("migrate", (A, A, float("inf")), {}),
    "unknown mode": ("migrate", (A, A, 1.0), {"mode": "nearest"}),
    "target without anchor_targets": ("migrate", (A, A, 1.0), {"mode": "target"}),
    "anchor_targets length mismatch": ("migrate", (A, A, 1.0), {"mode": "target", "anchor_targets": [0]}),
    "anchor_targets negative": ("migrate", (A, A, 1.0), {"mode": "target", "anchor_targets": [0, 1, 2, -3]}),
    "before/after shape mismatch": ("migrate", (A, A[:3], 1.0), {}),
    "before dim mismatch": ("migrate", (np.zeros((4, 2), np.float32),) * 2 + (1.0,), {}),
    "before 1-D": ("migrate", (np.zeros(3, np.float32), np.zeros(3, np.float32), 1.0), {}),
    "before NaN": ("migrate", (np.full((4, 3), np.nan, np.float32), A, 1.0), {}),
    "after inf": ("migrate", (A, np.full((4, 3), np.inf, np.float32), 1.0), {}),
    "classes unknown id": ("migrate", (A, A, 1.0), {"classes": [0, 77]}),
    "classes repeated": ("migrate", (A, A, 1.0), {"classes": [0, 0]}),
    "classes float dtype": ("migrate", (A, A, 1.0), {"classes": np.array([0.0])}),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bank_bad_input(case):
    method, args, kwargs = BAD_CALLS[case]
    bank = _core.PrototypeBank(3)
    bank.update(np.arange(6, dtype=np.float32).reshape(2, 3), [0, 1])
    state = bank.state_dict()
    with pytest.raises(ValueError), np.errstate(over="ignore"):
        getattr(bank, method)(*args, **kwargs)
    after = bank.state_dict()
    for key in state:
        np.testing.assert_array_equal(after[key], state[key])


def test_bank_bad_dim():
    for dim in (0, -3):
        with pytest.raises(ValueError, match="dim"):
            _core.PrototypeBank(dim)


def _good_state():
    bank = _core.PrototypeBank(2)
    bank.update(np.ones((3, 2), np.float32), [1, 4, 4])
    return bank.state_dict()


BAD_STATES = {
    "missing key": lambda s: s.pop("sums"),
    "zero count": lambda s: s.__setitem__("counts", np.array([0, 2])),
    "sums shape": lambda s: s.__setitem__("sums", np.ones((2, 3))),
    "counts length": lambda s: s.__setitem__("counts", np.array([1])),
    "repeated id": lambda s: s.__setitem__("class_ids", np.array([4, 4])),
    "negative id": lambda s: s.__setitem__("class_ids", np.array([-1, 4])),
    "sums NaN": lambda s: s.__setitem__("sums", np.full((2, 2), np.nan)),
    "dim zero": lambda s: s.__setitem__("dim", np.array(0)),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_from_state_bad_input(case):
    state = _good_state()
    BAD_STATES[case](state)
    with pytest.raises(ValueError):
        _core.PrototypeBank.from_state(state)


def test_from_state_needs_a_mapping():
    with pytest.raises(ValueError, match="mapping"):
        _core.PrototypeBank.from_state([1, 2, 3])
