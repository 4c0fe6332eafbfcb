//! TSGR key-relation subgraph: which class pairs of the text-similarity matrix the regulariser keeps.
//!
//! Definition (the contract the Python stub and the tests state too):
//! - The matrix is first symmetrised: `s[i][j] = sim[i][j]` where `sim[i][j] == sim[j][i]`, else
//!   `0.5 * sim[i][j] + 0.5 * sim[j][i]` in f32 arithmetic (the correctly rounded mean); for a
//!   symmetric input this is exactly `sim`. Ranking, threshold and weights all use `s`, so the result
//!   is well defined for any square input.
//! - k-nearest part: for every node `i`, its `min(k, C - 1)` most similar *other* nodes under `s[i][.]`,
//!   ties broken toward the lower index.
//! - threshold part: every pair `i != j` with `f64(s[i][j]) >= threshold` (compared exactly, in f64).
//! - The union of both parts, undirected, each edge once as `(i, j)` with `i < j`, sorted by `(i, j)`;
//!   weight of an edge = `s[i][j]`.
//!
//! The work is split by rows over `std::thread::scope` workers for large matrices; each worker
//! symmetrises its own rows (tiled transposed reads) and selects within them, so no data is shared
//! mutably.

use crate::error::{check_finite, InvalidInput, Result};
use crate::worker_threads;

/// The selected key edges.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEdges {
    /// Undirected edges `[i, j]` with `i < j`, sorted by `(i, j)`, each once.
    pub edges: Vec<[usize; 2]>,
    /// `s[i][j]` of each edge, where `s` is the symmetrised similarity.
    pub weights: Vec<f32>,
}

/// Below this many matrix entries the selection runs on the calling thread only.
const PARALLEL_MIN_ENTRIES: usize = 1 << 17;
/// Tile edge of the transposed reads in the symmetrisation.
const TILE: usize = 32;
/// Up to this `k` the per-row selection keeps a sorted buffer; above, it uses `select_nth_unstable_by`.
const SMALL_K: usize = 32;

/// Validate a `k` given from a signed source: `None` stays `None`, `k >= 1` is kept, anything else fails.
pub fn validate_k(k: Option<i64>) -> Result<Option<usize>> {
    match k {
        None => Ok(None),
        Some(k) if k >= 1 => Ok(Some(usize::try_from(k).unwrap_or(usize::MAX))),
        Some(k) => Err(InvalidInput(format!(
            "k must be an integer >= 1 (or None together with a threshold), got {k}"
        ))),
    }
}

/// The symmetrised matrix (`sim[i][j]` where `sim[i][j] == sim[j][i]`, else
/// `0.5 * sim[i][j] + 0.5 * sim[j][i]` in f32 arithmetic), row-major `[c, c]`.
///
/// `sim.len()` must be `c * c` (checked by the caller).
pub fn symmetrize(sim: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; c * c];
    symmetrize_rows(sim, c, 0, &mut out);
    out
}

/// The symmetrised value of a pair; one rounding, and exact (no halving of subnormals) when `a == b`.
#[inline(always)]
fn sym_mean(a: f32, b: f32) -> f32 {
    if a == b {
        a
    } else {
        0.5 * a + 0.5 * b
    }
}

/// Fill `out` (rows `row0 .. row0 + out.len() / c` of the symmetrised matrix).
///
/// Tiles of `TILE x TILE`: the transposed block is first copied row by row (contiguous reads)
/// into a small buffer that stays in L1, then combined with the direct block.
fn symmetrize_rows(sim: &[f32], c: usize, row0: usize, out: &mut [f32]) {
    if c == 0 {
        return;
    }
    let rows = out.len() / c;
    let mut tile = [[0.0f32; TILE]; TILE];
    for ib in (0..rows).step_by(TILE) {
        let ih = (ib + TILE).min(rows) - ib;
        for jb in (0..c).step_by(TILE) {
            let jw = (jb + TILE).min(c) - jb;
            // tile[t][u] = sim[jb + t][row0 + ib + u]
            for (t, dst) in tile.iter_mut().enumerate().take(jw) {
                let start = (jb + t) * c + row0 + ib;
                dst[..ih].copy_from_slice(&sim[start..start + ih]);
            }
            for u in 0..ih {
                let i = row0 + ib + u;
                let src = &sim[i * c + jb..i * c + jb + jw];
                let dst = &mut out[(ib + u) * c + jb..(ib + u) * c + jb + jw];
                for ((d, &a), t) in dst.iter_mut().zip(src).zip(tile.iter()) {
                    *d = sym_mean(a, t[u]);
                }
            }
        }
    }
}

/// Encode an undirected edge as a sortable key: `(min << 32) | max`.
#[inline]
fn edge_key(a: usize, b: usize) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    ((lo as u64) << 32) | hi as u64
}

/// Push the keys of row `i`'s `kk` nearest other nodes (`0 < kk < c - 1`).
fn push_knn(row: &[f32], i: usize, kk: usize, scratch: &mut Vec<usize>, keys: &mut Vec<u64>) {
    if kk <= SMALL_K {
        // Sorted buffer of the best (value, index) so far, best first, equal values by index.
        // Scanning j upward, a later candidate enters only if strictly better than the worst kept,
        // and moves up only past strictly smaller values, which keeps the lower index first among
        // equal values.
        let mut buf = [(0.0f32, 0usize); SMALL_K];
        let buf = &mut buf[..kk];
        for (slot, j) in buf.iter_mut().zip((0..row.len()).filter(|&j| j != i)) {
            *slot = (row[j], j);
        }
        let start = buf[kk - 1].1 + 1; // the first kk others are 0..=kk minus i
        buf.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut worst = buf[kk - 1].0;
        const BLOCK: usize = 16;
        let mut j0 = start;
        while j0 < row.len() {
            let end = (j0 + BLOCK).min(row.len());
            // Fast path: nothing in the block beats the worst kept (vectorised compare).
            if row[j0..end].iter().fold(false, |any, &v| any | (v > worst)) {
                for (j, &v) in row.iter().enumerate().take(end).skip(j0) {
                    if v > worst && j != i {
                        let mut p = kk - 1;
                        while p > 0 && buf[p - 1].0 < v {
                            buf[p] = buf[p - 1];
                            p -= 1;
                        }
                        buf[p] = (v, j);
                        worst = buf[kk - 1].0;
                    }
                }
            }
            j0 = end;
        }
        keys.extend(buf.iter().map(|&(_, j)| edge_key(i, j)));
    } else {
        scratch.clear();
        scratch.extend((0..row.len()).filter(|&j| j != i));
        // A strict total order (value descending, then index ascending): the first kk are unique.
        scratch.select_nth_unstable_by(kk - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        keys.extend(scratch[..kk].iter().map(|&j| edge_key(i, j)));
    }
}

/// Symmetrise rows `row0..` into `out` and return the edge keys those rows contribute.
fn select_rows(
    sim: &[f32],
    c: usize,
    row0: usize,
    out: &mut [f32],
    kk: Option<usize>,
    threshold: Option<f64>,
) -> Vec<u64> {
    let mut keys = Vec::new();
    let mut scratch = Vec::new();
    // A block of TILE rows is symmetrised, then selected while it is still in cache.
    for (b, block) in out.chunks_mut(TILE * c).enumerate() {
        let first = row0 + b * TILE;
        symmetrize_rows(sim, c, first, block);
        for (il, row) in block.chunks_exact(c).enumerate() {
            let i = first + il;
            if let Some(kk) = kk {
                push_knn(row, i, kk, &mut scratch, &mut keys);
            }
            if let Some(t) = threshold {
                for (j, &v) in row.iter().enumerate().skip(i + 1) {
                    if f64::from(v) >= t {
                        keys.push(edge_key(i, j));
                    }
                }
            }
        }
    }
    keys
}

/// Select the key edges of a `[c, c]` row-major similarity matrix (see the module docs).
///
/// `k`: neighbours per node (`None`: threshold only; `k >= c - 1` selects all pairs).
/// `threshold`: also keep every pair with `s >= threshold` (may be infinite, not NaN).
pub fn select_key_edges(
    sim: &[f32],
    c: usize,
    k: Option<usize>,
    threshold: Option<f64>,
) -> Result<KeyEdges> {
    if c.checked_mul(c) != Some(sim.len()) {
        return Err(InvalidInput(format!(
            "sim must have shape [C, C]: {} values do not make a {c} x {c} matrix",
            sim.len()
        )));
    }
    if c > u32::MAX as usize {
        return Err(InvalidInput(format!("sim is too large: C = {c}")));
    }
    match (k, threshold) {
        (None, None) => {
            return Err(InvalidInput(
                "k is None and threshold is None: give k >= 1, a threshold, or both".into(),
            ))
        }
        (Some(0), _) => {
            return Err(InvalidInput(
                "k must be an integer >= 1 (or None together with a threshold), got 0".into(),
            ))
        }
        (_, Some(t)) if t.is_nan() => {
            return Err(InvalidInput("threshold must be a number, got NaN".into()))
        }
        _ => {}
    }
    check_finite("sim", sim)?;

    let kk = k.map(|k| k.min(c.saturating_sub(1)));
    if c < 2 {
        return Ok(KeyEdges {
            edges: Vec::new(),
            weights: Vec::new(),
        });
    }
    if kk == Some(c - 1) {
        // Every node keeps every other node: all pairs, no ranking needed.
        let s = symmetrize(sim, c);
        let mut edges = Vec::with_capacity(c * (c - 1) / 2);
        let mut weights = Vec::with_capacity(c * (c - 1) / 2);
        for i in 0..c {
            for j in i + 1..c {
                edges.push([i, j]);
                weights.push(s[i * c + j]);
            }
        }
        return Ok(KeyEdges { edges, weights });
    }

    let mut s = vec![0.0f32; c * c];
    let threads = if c * c >= PARALLEL_MIN_ENTRIES {
        worker_threads().min(c / TILE).max(1)
    } else {
        1
    };
    let mut keys: Vec<u64> = if threads == 1 {
        select_rows(sim, c, 0, &mut s, kk, threshold)
    } else {
        let rows_per = c.div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = s
                .chunks_mut(rows_per * c)
                .enumerate()
                .map(|(t, out)| {
                    scope.spawn(move || select_rows(sim, c, t * rows_per, out, kk, threshold))
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                // A worker only panics on a bug; re-raise it on this thread.
                all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            all
        })
    };
    keys.sort_unstable();
    keys.dedup();
    let mut edges = Vec::with_capacity(keys.len());
    let mut weights = Vec::with_capacity(keys.len());
    for key in keys {
        let (i, j) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
        edges.push([i, j]);
        weights.push(s[i * c + j]);
    }
    Ok(KeyEdges { edges, weights })
}

/// Rooted neighbourhoods of TSGR's rooted mode: for each root `r`, the `min(k, c - 1)` columns
/// `j != r` with the largest `sim[r][j]`, best first, ties toward the lower `j`.
///
/// `sim` is row-major `[c, c]` and is read as given (row `r` only; no symmetrisation), `roots` are row
/// indices in `[0, c)` (repeats allowed), `k >= 1`. Returns the neighbours row-major `[roots, kk]`.
pub fn select_neighbors(sim: &[f32], c: usize, roots: &[i64], k: usize) -> Result<Vec<usize>> {
    if c.checked_mul(c) != Some(sim.len()) {
        return Err(InvalidInput(format!(
            "sim must have shape [C, C]: {} values do not make a {c} x {c} matrix",
            sim.len()
        )));
    }
    if k == 0 {
        return Err(InvalidInput("k must be an integer >= 1, got 0".into()));
    }
    if let Some(&bad) = roots.iter().find(|&&r| r < 0 || r as u64 >= c as u64) {
        return Err(InvalidInput(format!(
            "roots must be row indices in [0, {c}), got {bad}"
        )));
    }
    check_finite("sim", sim)?;
    let kk = k.min(c.saturating_sub(1));
    let mut out = Vec::with_capacity(roots.len() * kk);
    let mut others: Vec<usize> = Vec::with_capacity(c);
    for &r in roots {
        let r = r as usize;
        let row = &sim[r * c..(r + 1) * c];
        others.clear();
        others.extend((0..c).filter(|&j| j != r));
        // Descending similarity, then ascending index: a total order, so the result is unique.
        let better = |a: &usize, b: &usize| {
            row[*b]
                .partial_cmp(&row[*a])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        };
        if kk < others.len() {
            others.select_nth_unstable_by(kk, better);
            others.truncate(kk);
        }
        others.sort_unstable_by(better);
        out.extend_from_slice(&others[..kk]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic generator (xorshift), so the tests need no crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Brute force straight from the definition: full sort of each row.
    fn reference(sim: &[f32], c: usize, k: Option<usize>, t: Option<f64>) -> KeyEdges {
        let s = symmetrize(sim, c);
        let mut keep = vec![false; c * c];
        for i in 0..c {
            if let Some(k) = k {
                let mut order: Vec<usize> = (0..c).filter(|&j| j != i).collect();
                order.sort_by(|&a, &b| s[i * c + b].total_cmp(&s[i * c + a]).then(a.cmp(&b)));
                for &j in order.iter().take(k) {
                    keep[i.min(j) * c + i.max(j)] = true;
                }
            }
            if let Some(t) = t {
                for j in 0..c {
                    if j != i && f64::from(s[i * c + j]) >= t {
                        keep[i.min(j) * c + i.max(j)] = true;
                    }
                }
            }
        }
        let mut out = KeyEdges {
            edges: vec![],
            weights: vec![],
        };
        for i in 0..c {
            for j in i + 1..c {
                if keep[i * c + j] {
                    out.edges.push([i, j]);
                    out.weights.push(s[i * c + j]);
                }
            }
        }
        out
    }

    #[test]
    fn symmetrize_is_exact_on_symmetric_input() {
        let sim = [1.0, 0.3, 0.3, 1.0];
        assert_eq!(symmetrize(&sim, 2), sim.to_vec());
        let big = [f32::MAX, f32::MAX, f32::MAX, f32::MAX];
        assert_eq!(symmetrize(&big, 2), big.to_vec());
        assert_eq!(
            symmetrize(&[0.0, 1.0, 2.0, 0.0], 2),
            vec![0.0, 1.5, 1.5, 0.0]
        );
    }

    #[test]
    fn small_example() {
        // 0-1 most similar, 2 closest to 1, 3 closest to 0 (tie with 2 broken toward 0).
        #[rustfmt::skip]
        let sim = [
            1.0, 0.9, 0.1, 0.5,
            0.9, 1.0, 0.6, 0.2,
            0.1, 0.6, 1.0, 0.5,
            0.5, 0.2, 0.5, 1.0,
        ];
        let got = select_key_edges(&sim, 4, Some(1), None).unwrap();
        assert_eq!(got.edges, vec![[0, 1], [0, 3], [1, 2]]);
        assert_eq!(got.weights, vec![0.9, 0.5, 0.6]);
        let got = select_key_edges(&sim, 4, None, Some(0.55)).unwrap();
        assert_eq!(got.edges, vec![[0, 1], [1, 2]]);
        let got = select_key_edges(&sim, 4, Some(1), Some(0.5)).unwrap();
        assert_eq!(got.edges, vec![[0, 1], [0, 3], [1, 2], [2, 3]]);
    }

    #[test]
    fn degenerate_sizes() {
        assert!(select_key_edges(&[], 0, Some(3), None)
            .unwrap()
            .edges
            .is_empty());
        assert!(select_key_edges(&[1.0], 1, Some(3), Some(-1.0))
            .unwrap()
            .edges
            .is_empty());
        let two = select_key_edges(&[1.0, 0.2, 0.4, 1.0], 2, Some(1), None).unwrap();
        assert_eq!(two.edges, vec![[0, 1]]);
        assert_eq!(two.weights, vec![0.3f32]);
        let all = select_key_edges(&[0.0; 16], 4, Some(99), None).unwrap();
        assert_eq!(all.edges.len(), 6);
    }

    #[test]
    fn matches_brute_force_with_ties_and_asymmetry() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..400 {
            let c = 1 + rng.below(40) as usize;
            // Few distinct values: many ties. Some cases asymmetric.
            let levels = 1 + rng.below(6);
            let mut sim: Vec<f32> = (0..c * c).map(|_| rng.below(levels) as f32 / 4.0).collect();
            if case % 3 != 0 {
                for i in 0..c {
                    for j in 0..i {
                        sim[i * c + j] = sim[j * c + i];
                    }
                }
            }
            let k = match rng.below(4) {
                0 => None,
                _ => Some(1 + rng.below(c as u64 + 2) as usize),
            };
            let t = if k.is_none() || rng.below(2) == 0 {
                Some(rng.below(8) as f64 / 8.0)
            } else {
                None
            };
            let got = select_key_edges(&sim, c, k, t).unwrap();
            assert_eq!(
                got,
                reference(&sim, c, k, t),
                "case {case}: c={c} k={k:?} t={t:?}"
            );
        }
    }

    #[test]
    fn parallel_and_large_k_paths_match_brute_force() {
        let mut rng = Rng(42);
        let c = 420; // above PARALLEL_MIN_ENTRIES
        let sim: Vec<f32> = (0..c * c).map(|_| rng.below(50) as f32).collect();
        for k in [1, 7, SMALL_K, SMALL_K + 1, 200] {
            let got = select_key_edges(&sim, c, Some(k), Some(48.5)).unwrap();
            assert_eq!(got, reference(&sim, c, Some(k), Some(48.5)), "k={k}");
        }
    }

    fn neighbors_reference(sim: &[f32], c: usize, roots: &[i64], k: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for &r in roots {
            let r = r as usize;
            let mut js: Vec<usize> = (0..c).filter(|&j| j != r).collect();
            js.sort_by(|&a, &b| {
                sim[r * c + b]
                    .partial_cmp(&sim[r * c + a])
                    .unwrap()
                    .then(a.cmp(&b))
            });
            out.extend(js.into_iter().take(k.min(c - 1)));
        }
        out
    }

    #[test]
    fn neighbors_match_brute_force_with_ties() {
        let mut rng = Rng(7);
        for &(c, k) in &[(1usize, 3usize), (2, 1), (5, 2), (9, 8), (9, 20), (40, 10)] {
            // values from a small set: many ties
            let sim: Vec<f32> = (0..c * c).map(|_| rng.below(4) as f32 * 0.25).collect();
            let roots: Vec<i64> = (0..c as i64).chain([0]).collect();
            let got = select_neighbors(&sim, c, &roots, k).unwrap();
            assert_eq!(got, neighbors_reference(&sim, c, &roots, k), "c={c} k={k}");
        }
    }

    #[test]
    fn neighbors_bad_input() {
        let sim = vec![0.0f32; 9];
        assert!(select_neighbors(&sim, 3, &[0], 0).is_err());
        assert!(select_neighbors(&sim, 3, &[3], 1).is_err());
        assert!(select_neighbors(&sim, 3, &[-1], 1).is_err());
        assert!(select_neighbors(&sim[..8], 3, &[0], 1).is_err());
        let mut nan = sim.clone();
        nan[4] = f32::NAN;
        assert!(select_neighbors(&nan, 3, &[0], 1).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(select_key_edges(&[0.0; 6], 2, Some(1), None).is_err());
        assert!(select_key_edges(&[0.0; 4], 2, Some(0), None).is_err());
        assert!(select_key_edges(&[0.0; 4], 2, None, None).is_err());
        assert!(select_key_edges(&[0.0; 4], 2, None, Some(f64::NAN)).is_err());
        assert!(select_key_edges(&[0.0, f32::NAN, 0.0, 0.0], 2, Some(1), None).is_err());
        assert!(select_key_edges(&[0.0, f32::INFINITY, 0.0, 0.0], 2, Some(1), None).is_err());
        assert!(validate_k(Some(-3)).is_err());
        assert_eq!(validate_k(Some(3)), Ok(Some(3)));
        assert_eq!(validate_k(None), Ok(None));
    }
}
