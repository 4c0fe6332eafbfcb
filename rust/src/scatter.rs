//! Per-class scatter: streaming feature sums, sums of outer products and counts per class, from
//! which the class means and covariances follow (RAPF's class statistics, `method/peers/rapf.py`).
//!
//! Storage per class, in f64: the sum `s = sum_i x_i` (`[dim]`), the scatter `S = sum_i x_i x_i^T`
//! (`[dim, dim]`, row-major) and the count `n`. Statistics: `mean = s / n` and the unbiased
//! covariance `(S - n mean mean^T) / (n - 1)` (zero for a class of one sample). States of shards
//! merge by addition (`add`), which is what several processes do after each task.
//!
//! Kept apart from the prototype bank: `dim * dim` values per class (2 MiB at dim = 512) are only
//! for the methods that sample from class Gaussians.
//!
//! Every method validates all of its input before changing anything: on error nothing changes.

use std::collections::BTreeMap;

use crate::error::{check_finite, check_finite_f64, InvalidInput, Result};
use crate::prototypes::{check_class_ids, check_rows, check_unique};
use crate::worker_threads;

/// The plain-data state of a `ClassScatter`, for checkpoints and merging: classes by id, ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterState {
    /// Feature dimension.
    pub dim: usize,
    /// Class ids, ascending.
    pub class_ids: Vec<i64>,
    /// Per-class feature sums, row-major `[C, dim]`.
    pub sums: Vec<f64>,
    /// Per-class sums of outer products, row-major `[C, dim, dim]`.
    pub scatters: Vec<f64>,
    /// Per-class sample counts (>= 1).
    pub counts: Vec<i64>,
}

/// Class means and covariances from streaming per-class sums (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassScatter {
    dim: usize,
    /// class id -> slot; slots are in insertion order.
    index: BTreeMap<i64, usize>,
    /// Slot-major sums `[slots, dim]`.
    sums: Vec<f64>,
    /// Slot-major scatters `[slots, dim, dim]`.
    scatters: Vec<f64>,
    /// Count of each slot.
    counts: Vec<i64>,
}

/// Below this many multiply-adds (N * dim * dim) `update` runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 22;

impl ClassScatter {
    /// An empty accumulator for `dim`-dimensional features (`dim >= 1`).
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(InvalidInput("dim must be >= 1, got 0".into()));
        }
        Ok(Self {
            dim,
            index: BTreeMap::new(),
            sums: Vec::new(),
            scatters: Vec::new(),
            counts: Vec::new(),
        })
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of stored classes.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no class is stored.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `class_id` is stored.
    pub fn contains(&self, class_id: i64) -> bool {
        self.index.contains_key(&class_id)
    }

    fn slot_or_insert(&mut self, class_id: i64) -> usize {
        let next = self.counts.len();
        let slot = *self.index.entry(class_id).or_insert(next);
        if slot == next {
            self.sums.resize(self.sums.len() + self.dim, 0.0);
            self.scatters
                .resize(self.scatters.len() + self.dim * self.dim, 0.0);
            self.counts.push(0);
        }
        slot
    }

    /// Add `labels.len()` samples: `features` row-major `[N, dim]`, `labels` `[N]` (ids >= 0).
    pub fn update(&mut self, features: &[f32], labels: &[i64]) -> Result<()> {
        let dim = self.dim;
        check_rows("features", features.len(), labels.len(), dim, "N")?;
        check_class_ids("labels", labels)?;
        check_finite("features", features)?;
        let mut rows: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, &label) in labels.iter().enumerate() {
            let slot = self.slot_or_insert(label);
            rows.entry(slot).or_default().push(i);
        }
        for (&slot, r) in &rows {
            self.counts[slot] += r.len() as i64;
        }
        // One job per class with samples: its sum and scatter (disjoint slices) and its rows.
        let mut jobs: Vec<(&mut [f64], &mut [f64], &[usize])> = self
            .sums
            .chunks_exact_mut(dim)
            .zip(self.scatters.chunks_exact_mut(dim * dim))
            .enumerate()
            .filter_map(|(slot, (s, sc))| rows.get(&slot).map(|r| (s, sc, r.as_slice())))
            .collect();
        let threads = if labels.len() * dim * dim < PARALLEL_MIN_MACS {
            1
        } else {
            worker_threads().min(jobs.len()).max(1)
        };
        let per_thread = jobs.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for chunk in jobs.chunks_mut(per_thread) {
                scope.spawn(move || {
                    for (sum, scatter, r) in chunk.iter_mut() {
                        accumulate(features, dim, r, sum, scatter);
                    }
                });
            }
        });
        Ok(())
    }

    /// Add per-class sums (`[K, dim]`), scatters (`[K, dim, dim]`) and counts (`[K]`, >= 0) to
    /// `class_ids` (unique, >= 0): what `update` would do with those samples, already summed (e.g.
    /// another process's shard). A class with count 0 is left as it is.
    pub fn add(
        &mut self,
        class_ids: &[i64],
        sums: &[f64],
        scatters: &[f64],
        counts: &[i64],
    ) -> Result<()> {
        let (dim, k) = (self.dim, class_ids.len());
        check_rows("sums", sums.len(), k, dim, "len(class_ids)")?;
        if scatters.len() != k * dim * dim {
            return Err(InvalidInput(format!(
                "scatters must have shape [len(class_ids), dim, dim] = [{k}, {dim}, {dim}], got {} values",
                scatters.len()
            )));
        }
        if counts.len() != k {
            return Err(InvalidInput(format!(
                "counts must have shape [len(class_ids)] = [{k}], got [{}]",
                counts.len()
            )));
        }
        check_class_ids("class_ids", class_ids)?;
        check_unique("class_ids", class_ids)?;
        check_finite_f64("sums", sums)?;
        check_finite_f64("scatters", scatters)?;
        if let Some(&bad) = counts.iter().find(|&&n| n < 0) {
            return Err(InvalidInput(format!(
                "counts must all be >= 0, found {bad}"
            )));
        }
        for (i, (&id, &n)) in class_ids.iter().zip(counts).enumerate() {
            if n == 0 {
                continue;
            }
            let slot = self.slot_or_insert(id);
            self.counts[slot] += n;
            add_into(
                &mut self.sums[slot * dim..(slot + 1) * dim],
                &sums[i * dim..(i + 1) * dim],
            );
            let dd = dim * dim;
            add_into(
                &mut self.scatters[slot * dd..(slot + 1) * dd],
                &scatters[i * dd..(i + 1) * dd],
            );
        }
        Ok(())
    }

    /// `(class_ids, means [C, dim], covariances [C, dim, dim], counts)`, ids ascending; each
    /// covariance is unbiased and exactly symmetric (zero for a class of one sample).
    pub fn statistics(&self) -> (Vec<i64>, Vec<f64>, Vec<f64>, Vec<i64>) {
        let (dim, dd) = (self.dim, self.dim * self.dim);
        let mut means = Vec::with_capacity(self.len() * dim);
        let mut covs = vec![0.0f64; self.len() * dd];
        for (cov, &slot) in covs.chunks_exact_mut(dd).zip(self.index.values()) {
            let n = self.counts[slot] as f64;
            let mean: Vec<f64> = self.sums[slot * dim..(slot + 1) * dim]
                .iter()
                .map(|s| s / n)
                .collect();
            if n > 1.0 {
                let scatter = &self.scatters[slot * dd..(slot + 1) * dd];
                for i in 0..dim {
                    for j in i..dim {
                        // the mean of both triangles: dgemm need not round them alike
                        let s = 0.5 * (scatter[i * dim + j] + scatter[j * dim + i]);
                        let c = (s - n * mean[i] * mean[j]) / (n - 1.0);
                        cov[i * dim + j] = c;
                        cov[j * dim + i] = c;
                    }
                }
            }
            means.extend(mean);
        }
        let counts = self.index.values().map(|&s| self.counts[s]).collect();
        (self.index.keys().copied().collect(), means, covs, counts)
    }

    /// The accumulator as plain data (classes ascending).
    pub fn to_state(&self) -> ScatterState {
        let (dim, dd) = (self.dim, self.dim * self.dim);
        let mut state = ScatterState {
            dim,
            class_ids: self.index.keys().copied().collect(),
            sums: Vec::with_capacity(self.sums.len()),
            scatters: Vec::with_capacity(self.scatters.len()),
            counts: Vec::with_capacity(self.counts.len()),
        };
        for &slot in self.index.values() {
            state
                .sums
                .extend_from_slice(&self.sums[slot * dim..(slot + 1) * dim]);
            state
                .scatters
                .extend_from_slice(&self.scatters[slot * dd..(slot + 1) * dd]);
            state.counts.push(self.counts[slot]);
        }
        state
    }

    /// Rebuild an accumulator from `to_state`'s output, validating it (counts must be >= 1).
    pub fn from_state(state: ScatterState) -> Result<Self> {
        if let Some(&bad) = state.counts.iter().find(|&&n| n < 1) {
            return Err(InvalidInput(format!(
                "counts must all be >= 1, found {bad}"
            )));
        }
        let mut out = Self::new(state.dim)?;
        out.add(
            &state.class_ids,
            &state.sums,
            &state.scatters,
            &state.counts,
        )?;
        Ok(out)
    }
}

fn add_into(acc: &mut [f64], values: &[f64]) {
    for (a, &v) in acc.iter_mut().zip(values) {
        *a += v;
    }
}

/// Add the samples `rows` of `features` (`[N, dim]`) to one class's `sum` and `scatter`
/// (`scatter += X^T X` as one f64 matrix product over the class's rows `X`).
fn accumulate(features: &[f32], dim: usize, rows: &[usize], sum: &mut [f64], scatter: &mut [f64]) {
    let mut x = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        x.extend(
            features[r * dim..(r + 1) * dim]
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    for row in x.chunks_exact(dim) {
        add_into(sum, row);
    }
    let n = rows.len();
    assert!(n * dim == x.len() && dim * dim == scatter.len());
    // SAFETY: X is [n, dim] row-major, read as X^T (strides 1, dim) and as X (strides dim, 1);
    // the assertion keeps every addressed element inside `x` and `scatter` ([dim, dim],
    // row-major), and `scatter` is exclusively borrowed and does not overlap `x`.
    unsafe {
        matrixmultiply::dgemm(
            dim,
            n,
            dim,
            1.0,
            x.as_ptr(),
            1,
            dim as isize,
            x.as_ptr(),
            dim as isize,
            1,
            1.0,
            scatter.as_mut_ptr(),
            dim as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.max(1);
        (0..n * dim)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0 + (i % dim) as f64) as f32
            })
            .collect()
    }

    /// Two-pass mean and covariance of one class, straight from the definition.
    fn reference(features: &[f32], labels: &[i64], class: i64, dim: usize) -> (Vec<f64>, Vec<f64>) {
        let rows: Vec<&[f32]> = features
            .chunks_exact(dim)
            .zip(labels)
            .filter(|(_, &l)| l == class)
            .map(|(r, _)| r)
            .collect();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..dim)
            .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n)
            .collect();
        let mut cov = vec![0.0; dim * dim];
        for i in 0..dim {
            for j in 0..dim {
                let s: f64 = rows
                    .iter()
                    .map(|r| (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j]))
                    .sum();
                cov[i * dim + j] = if n > 1.0 { s / (n - 1.0) } else { 0.0 };
            }
        }
        (mean, cov)
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn statistics_match_the_two_pass_reference() {
        let dim = 5;
        let labels: Vec<i64> = (0..40).map(|i| [7, 2, 7, 4][i % 4]).chain([9]).collect();
        let features = samples(labels.len(), dim, 3);
        let mut acc = ClassScatter::new(dim).unwrap();
        acc.update(&features[..20 * dim], &labels[..20]).unwrap();
        acc.update(&features[20 * dim..], &labels[20..]).unwrap();
        let (ids, means, covs, counts) = acc.statistics();
        assert_eq!(ids, vec![2, 4, 7, 9]);
        assert_eq!(counts, vec![10, 10, 20, 1]);
        for (c, &id) in ids.iter().enumerate() {
            let (mean, cov) = reference(&features, &labels, id, dim);
            assert_close(&means[c * dim..(c + 1) * dim], &mean, 1e-12);
            assert_close(&covs[c * dim * dim..(c + 1) * dim * dim], &cov, 1e-9);
        }
    }

    #[test]
    fn threaded_update_equals_the_reference() {
        let dim = 64;
        let labels: Vec<i64> = (0..1100).map(|i| (i % 11) as i64).collect();
        let features = samples(labels.len(), dim, 5);
        let mut acc = ClassScatter::new(dim).unwrap();
        acc.update(&features, &labels).unwrap();
        let (_, means, covs, _) = acc.statistics();
        let (mean, cov) = reference(&features, &labels, 6, dim);
        assert_close(&means[6 * dim..7 * dim], &mean, 1e-12);
        assert_close(&covs[6 * dim * dim..7 * dim * dim], &cov, 1e-9);
    }

    #[test]
    fn merged_shards_equal_one_update() {
        let dim = 3;
        let labels = [1i64, 0, 1, 1, 0, 5];
        let features = samples(labels.len(), dim, 9);
        let mut whole = ClassScatter::new(dim).unwrap();
        whole.update(&features, &labels).unwrap();
        let mut merged = ClassScatter::new(dim).unwrap();
        for (f, l) in features.chunks(3 * dim).zip(labels.chunks(3)) {
            let mut shard = ClassScatter::new(dim).unwrap();
            shard.update(f, l).unwrap();
            let s = shard.to_state();
            merged
                .add(&s.class_ids, &s.sums, &s.scatters, &s.counts)
                .unwrap();
        }
        let (a, b) = (whole.statistics(), merged.statistics());
        assert_eq!((&a.0, &a.3), (&b.0, &b.3));
        assert_close(&a.1, &b.1, 1e-12);
        assert_close(&a.2, &b.2, 1e-9);
        let back = ClassScatter::from_state(merged.to_state()).unwrap();
        assert_eq!(back.to_state(), merged.to_state());
    }

    #[test]
    fn errors_leave_the_accumulator_unchanged() {
        let mut acc = ClassScatter::new(2).unwrap();
        acc.update(&[1.0, 2.0], &[0]).unwrap();
        let before = acc.clone();
        assert!(acc.update(&[1.0, 2.0, 3.0], &[0]).is_err());
        assert!(acc.update(&[1.0, f32::NAN], &[0]).is_err());
        assert!(acc.update(&[1.0, 2.0], &[-1]).is_err());
        assert!(acc.add(&[1, 1], &[0.0; 4], &[0.0; 8], &[1, 1]).is_err());
        assert!(acc.add(&[1], &[0.0; 2], &[0.0; 3], &[1]).is_err());
        assert!(acc.add(&[1], &[0.0; 2], &[0.0; 4], &[-1]).is_err());
        assert!(acc
            .add(&[1], &[f64::INFINITY, 0.0], &[0.0; 4], &[1])
            .is_err());
        assert_eq!(acc, before);
        let mut state = acc.to_state();
        state.counts[0] = 0;
        assert!(ClassScatter::from_state(state).is_err());
        assert!(ClassScatter::new(0).is_err());
    }
}
