//! The prototype bank: streaming per-class feature sums and counts, and anchor-induced migration.
//!
//! Storage: per class a running sum (f64) and a count (>= 1); the prototype (mean) is `sum / count`,
//! returned as f32. Writing a mean (`set_means`, `migrate`) stores `sum = mean * count`, so `means()`
//! returns exactly what was written (for counts below 2^29) and a later `update` combines the written
//! mean, weighted by its count, with the new samples. A class first created by `set_means` gets count 1.
//!
//! Every method validates all of its input before changing anything: on error the bank is unchanged.

use std::collections::BTreeMap;

use crate::error::{check_finite, check_finite_f64, InvalidInput, Result};
use crate::worker_threads;

/// How `migrate` turns anchor drifts into prototype shifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationMode {
    /// Every prototype moves by the Gaussian-weighted mean drift of all anchors,
    /// `w_ac = exp(-||before_a - P_c||^2 / (2 sigma^2))`.
    Gaussian,
    /// Every prototype moves by the plain mean drift of the anchors whose target class is its class
    /// (no such anchors: no move).
    Target,
    /// The Gaussian-weighted mean drift scaled by the kernel value of the nearest anchor,
    /// `max_a w_ac`: a class far from every anchor moves little (segpcl's reading of the paper's
    /// "magnitude modulated by proximity").
    Proximity,
}

impl MigrationMode {
    /// Parse `"gaussian"` or `"target"`.
    pub fn parse(mode: &str) -> Result<Self> {
        match mode {
            "gaussian" => Ok(Self::Gaussian),
            "target" => Ok(Self::Target),
            "proximity" => Ok(Self::Proximity),
            other => Err(InvalidInput(format!(
                "mode must be 'proximity', 'gaussian' or 'target', got {other:?}"
            ))),
        }
    }
}

/// The plain-data state of a bank, for checkpoints: classes sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct BankState {
    /// Feature dimension.
    pub dim: usize,
    /// Class ids, ascending.
    pub class_ids: Vec<i64>,
    /// Per-class feature sums, row-major `[C, dim]`.
    pub sums: Vec<f64>,
    /// Per-class sample counts (>= 1).
    pub counts: Vec<i64>,
}

/// Streaming per-class prototypes (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeBank {
    dim: usize,
    /// class id -> slot; slots are in insertion order.
    index: BTreeMap<i64, usize>,
    /// Slot-major sums `[slots, dim]`.
    sums: Vec<f64>,
    /// Count of each slot.
    counts: Vec<i64>,
}

pub(crate) fn check_class_ids(name: &str, ids: &[i64]) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&id| id < 0) {
        return Err(InvalidInput(format!(
            "{name} must be class ids >= 0, found {bad}"
        )));
    }
    Ok(())
}

pub(crate) fn check_unique(name: &str, ids: &[i64]) -> Result<()> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(InvalidInput(format!(
            "{name} must not repeat a class id, {} appears twice",
            w[0]
        )));
    }
    Ok(())
}

pub(crate) fn check_rows(
    name: &str,
    len: usize,
    rows: usize,
    dim: usize,
    rows_name: &str,
) -> Result<()> {
    if rows.checked_mul(dim) != Some(len) {
        return Err(InvalidInput(format!(
            "{name} must have shape [{rows_name}, dim] = [{rows}, {dim}], got {len} values"
        )));
    }
    Ok(())
}

impl PrototypeBank {
    /// An empty bank for `dim`-dimensional features (`dim >= 1`).
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(InvalidInput("dim must be >= 1, got 0".into()));
        }
        Ok(Self {
            dim,
            index: BTreeMap::new(),
            sums: Vec::new(),
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

    /// Stored class ids, ascending.
    pub fn class_ids(&self) -> Vec<i64> {
        self.index.keys().copied().collect()
    }

    fn slot_or_insert(&mut self, class_id: i64) -> usize {
        let next = self.counts.len();
        let slot = *self.index.entry(class_id).or_insert(next);
        if slot == next {
            self.sums.resize(self.sums.len() + self.dim, 0.0);
            self.counts.push(0);
        }
        slot
    }

    fn mean_into(&self, slot: usize, out: &mut [f32]) {
        let n = self.counts[slot] as f64;
        let sum = &self.sums[slot * self.dim..(slot + 1) * self.dim];
        for (o, &s) in out.iter_mut().zip(sum) {
            *o = (s / n) as f32;
        }
    }

    /// Add `labels.len()` samples: `features` is row-major `[N, dim]`, `labels` `[N]` (ids >= 0).
    pub fn update(&mut self, features: &[f32], labels: &[i64]) -> Result<()> {
        check_rows("features", features.len(), labels.len(), self.dim, "N")?;
        check_class_ids("labels", labels)?;
        check_finite("features", features)?;
        for (row, &label) in features.chunks_exact(self.dim).zip(labels) {
            let slot = self.slot_or_insert(label);
            self.counts[slot] += 1;
            let sum = &mut self.sums[slot * self.dim..(slot + 1) * self.dim];
            for (s, &f) in sum.iter_mut().zip(row) {
                *s += f64::from(f);
            }
        }
        Ok(())
    }

    /// Add per-class feature sums (row-major `[K, dim]`, f64) and sample counts (`[K]`, >= 0) to
    /// `class_ids` (unique, >= 0): what `update` would do with those samples, already summed (e.g. the
    /// sums of other processes' shards). A class with count 0 is left as it is.
    pub fn add_sums(&mut self, class_ids: &[i64], sums: &[f64], counts: &[i64]) -> Result<()> {
        check_rows(
            "sums",
            sums.len(),
            class_ids.len(),
            self.dim,
            "len(class_ids)",
        )?;
        if counts.len() != class_ids.len() {
            return Err(InvalidInput(format!(
                "counts must have shape [len(class_ids)] = [{}], got [{}]",
                class_ids.len(),
                counts.len()
            )));
        }
        check_class_ids("class_ids", class_ids)?;
        check_unique("class_ids", class_ids)?;
        check_finite_f64("sums", sums)?;
        if let Some(&bad) = counts.iter().find(|&&n| n < 0) {
            return Err(InvalidInput(format!(
                "counts must all be >= 0, found {bad}"
            )));
        }
        for ((&id, row), &n) in class_ids
            .iter()
            .zip(sums.chunks_exact(self.dim))
            .zip(counts)
        {
            if n == 0 {
                continue;
            }
            let slot = self.slot_or_insert(id);
            self.counts[slot] += n;
            let sum = &mut self.sums[slot * self.dim..(slot + 1) * self.dim];
            for (s, &f) in sum.iter_mut().zip(row) {
                *s += f;
            }
        }
        Ok(())
    }

    /// `(class_ids, means)`: ids ascending, means row-major `[C, dim]` (f32 of `sum / count`).
    pub fn means(&self) -> (Vec<i64>, Vec<f32>) {
        let mut out = vec![0.0f32; self.len() * self.dim];
        for (row, &slot) in out.chunks_exact_mut(self.dim).zip(self.index.values()) {
            self.mean_into(slot, row);
        }
        (self.class_ids(), out)
    }

    /// `(class_ids, counts)`, ids ascending.
    pub fn counts(&self) -> (Vec<i64>, Vec<i64>) {
        (
            self.class_ids(),
            self.index.values().map(|&s| self.counts[s]).collect(),
        )
    }

    /// Overwrite (or create) the means of `class_ids` (`prototypes` row-major `[len, dim]`).
    ///
    /// A stored class keeps its count; a new one gets count 1.
    pub fn set_means(&mut self, class_ids: &[i64], prototypes: &[f32]) -> Result<()> {
        check_rows(
            "prototypes",
            prototypes.len(),
            class_ids.len(),
            self.dim,
            "len(class_ids)",
        )?;
        check_class_ids("class_ids", class_ids)?;
        check_unique("class_ids", class_ids)?;
        check_finite("prototypes", prototypes)?;
        for (&id, row) in class_ids.iter().zip(prototypes.chunks_exact(self.dim)) {
            let slot = self.slot_or_insert(id);
            if self.counts[slot] == 0 {
                self.counts[slot] = 1;
            }
            self.write_mean(slot, row.iter().map(|&m| f64::from(m)));
        }
        Ok(())
    }

    fn write_mean(&mut self, slot: usize, mean: impl Iterator<Item = f64>) {
        let n = self.counts[slot] as f64;
        let sum = &mut self.sums[slot * self.dim..(slot + 1) * self.dim];
        for (s, m) in sum.iter_mut().zip(mean) {
            *s = m * n;
        }
    }

    /// Move stored prototypes by the drift `after - before` of `A` anchors (both row-major `[A, dim]`).
    ///
    /// `classes`: the classes to move, in that order (`None`: every stored class, ascending); each must
    /// be stored, none repeated. `anchor_targets` (`[A]`) is required by `MigrationMode::Target` and
    /// ignored otherwise. `sigma` must be finite and > 0 in both modes.
    ///
    /// Returns `(moved class ids, shifts)`, shifts row-major `[C', dim]` in the order of the ids;
    /// each moved mean becomes `mean + shift`.
    #[allow(clippy::too_many_arguments)]
    pub fn migrate(
        &mut self,
        before: &[f32],
        after: &[f32],
        sigma: f64,
        mode: MigrationMode,
        anchor_targets: Option<&[i64]>,
        classes: Option<&[i64]>,
    ) -> Result<(Vec<i64>, Vec<f32>)> {
        let dim = self.dim;
        if !before.len().is_multiple_of(dim) {
            return Err(InvalidInput(format!(
                "before must have shape [A, dim] with dim = {dim}, got {} values",
                before.len()
            )));
        }
        let a = before.len() / dim;
        check_rows("after", after.len(), a, dim, "A")?;
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(InvalidInput(format!(
                "sigma must be a finite number > 0, got {sigma}"
            )));
        }
        let targets = match (mode, anchor_targets) {
            (MigrationMode::Target, None) => {
                return Err(InvalidInput(
                    "anchor_targets [A] is required when mode='target'".into(),
                ))
            }
            (MigrationMode::Target, Some(t)) => {
                if t.len() != a {
                    return Err(InvalidInput(format!(
                        "anchor_targets must have shape [A] = [{a}], got [{}]",
                        t.len()
                    )));
                }
                check_class_ids("anchor_targets", t)?;
                Some(t)
            }
            (MigrationMode::Gaussian | MigrationMode::Proximity, _) => None,
        };
        let moved: Vec<i64> = match classes {
            None => self.class_ids(),
            Some(ids) => {
                if let Some(&bad) = ids.iter().find(|id| !self.contains(**id)) {
                    return Err(InvalidInput(format!(
                        "classes: class id {bad} is not in the bank"
                    )));
                }
                check_unique("classes", ids)?;
                ids.to_vec()
            }
        };
        check_finite("before", before)?;
        check_finite("after", after)?;

        let slots: Vec<usize> = moved.iter().map(|id| self.index[id]).collect();
        let mut shifts = vec![0.0f32; slots.len() * dim];
        if a > 0 && !slots.is_empty() {
            match targets {
                Some(t) => self.target_shifts(before, after, t, &moved, &mut shifts),
                None => {
                    let mut protos = vec![0.0f32; slots.len() * dim];
                    for (row, &slot) in protos.chunks_exact_mut(dim).zip(&slots) {
                        self.mean_into(slot, row);
                    }
                    let proximity = mode == MigrationMode::Proximity;
                    gaussian_shifts(protos, before, after, dim, sigma, proximity, &mut shifts);
                }
            }
        }
        for (shift, &slot) in shifts.chunks_exact(dim).zip(&slots) {
            let n = self.counts[slot] as f64;
            let sum = &mut self.sums[slot * dim..(slot + 1) * dim];
            for (s, &d) in sum.iter_mut().zip(shift) {
                *s += f64::from(d) * n;
            }
        }
        Ok((moved, shifts))
    }

    fn target_shifts(
        &self,
        before: &[f32],
        after: &[f32],
        targets: &[i64],
        moved: &[i64],
        shifts: &mut [f32],
    ) {
        let dim = self.dim;
        let position: BTreeMap<i64, usize> =
            moved.iter().enumerate().map(|(p, &id)| (id, p)).collect();
        let mut acc = vec![0.0f64; moved.len() * dim];
        let mut n = vec![0u64; moved.len()];
        for ((b, x), t) in before
            .chunks_exact(dim)
            .zip(after.chunks_exact(dim))
            .zip(targets)
        {
            if let Some(&p) = position.get(t) {
                n[p] += 1;
                for ((s, &xv), &bv) in acc[p * dim..(p + 1) * dim].iter_mut().zip(x).zip(b) {
                    *s += f64::from(xv) - f64::from(bv);
                }
            }
        }
        for (p, &count) in n.iter().enumerate() {
            if count > 0 {
                for (o, &s) in shifts[p * dim..(p + 1) * dim]
                    .iter_mut()
                    .zip(&acc[p * dim..(p + 1) * dim])
                {
                    *o = (s / count as f64) as f32;
                }
            }
        }
    }

    /// The bank as plain data (classes ascending).
    pub fn to_state(&self) -> BankState {
        let mut sums = Vec::with_capacity(self.sums.len());
        for &slot in self.index.values() {
            sums.extend_from_slice(&self.sums[slot * self.dim..(slot + 1) * self.dim]);
        }
        let (class_ids, counts) = self.counts();
        BankState {
            dim: self.dim,
            class_ids,
            sums,
            counts,
        }
    }

    /// Rebuild a bank from `to_state`'s output, validating it.
    pub fn from_state(state: BankState) -> Result<Self> {
        let BankState {
            dim,
            class_ids,
            sums,
            counts,
        } = state;
        let mut bank = Self::new(dim)?;
        check_rows("sums", sums.len(), class_ids.len(), dim, "C")?;
        if counts.len() != class_ids.len() {
            return Err(InvalidInput(format!(
                "counts must have shape [C] = [{}], got [{}]",
                class_ids.len(),
                counts.len()
            )));
        }
        check_class_ids("class_ids", &class_ids)?;
        check_unique("class_ids", &class_ids)?;
        if let Some(&bad) = counts.iter().find(|&&n| n < 1) {
            return Err(InvalidInput(format!(
                "counts must all be >= 1, found {bad}"
            )));
        }
        check_finite_f64("sums", &sums)?;
        bank.index = class_ids
            .iter()
            .enumerate()
            .map(|(slot, &id)| (id, slot))
            .collect();
        bank.sums = sums;
        bank.counts = counts;
        Ok(bank)
    }
}

// ---------------------------------------------------------------------------------------------
// Gaussian migration kernel.
//
// For the moved prototypes P [C, dim], anchors B [A, dim] and drifts D [A, dim]:
//   G = P' B'^T (f32 matrix product), where ' means "minus the mean anchor" (translation leaves
//     distances unchanged and shrinks the cancellation of the expansion below);
//   log w_ca = -max(0, ||P'_c||^2 + ||B'_a||^2 - 2 G_ca) / (2 sigma^2)   (f64);
//   w_ca = exp(log w_ca - max_a log w_ca), normalised to sum 1 per class   (f64; the max subtraction
//     keeps at least one weight at 1, so far-away anchors never underflow every weight to 0);
//   S = W D (f32 matrix product of the normalised weights with the drifts).
// Classes are split over std::thread::scope workers.
// ---------------------------------------------------------------------------------------------

/// Below this many multiply-adds (C * A * dim) the kernel runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// `c[m, n] = a[m, k] * b[k, n]`; `a`, `b` given with (row, column) strides, `c` row-major.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let last =
        |(rs, cs): (usize, usize), rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(a_strides, m, k) < a.len() && last(b_strides, k, n) < b.len() && m * n <= c.len());
    // SAFETY: the assertion above keeps every element the strides address inside the slices;
    // `c` is exclusively borrowed and does not overlap `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            a_strides.0 as isize,
            a_strides.1 as isize,
            b.as_ptr(),
            b_strides.0 as isize,
            b_strides.1 as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `exp(x)` for `x <= 0`, branch-free so that loops over it vectorise; relative error < 1e-12,
/// `x < -700` gives about 1e-304 (weights that small relative to 1 do not change an f32 result).
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
    let x = x.clamp(-700.0, 0.0);
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let ni = (t.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor polynomial of degree 10 on |r| <= ln2 / 2.
    let mut p = 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    p * f64::from_bits(((ni + 1023) as u64) << 52)
}

/// Turn one row of dot products `g[a] = <P'_c, B'_a>` into normalised weights, in place.
#[inline(always)]
fn weights_row_body(
    g: &mut [f32],
    bb: &[f64],
    pp: f64,
    inv_two_sigma2: f64,
    proximity: bool,
    lw: &mut [f64],
) {
    for ((l, &gv), &b) in lw.iter_mut().zip(g.iter()).zip(bb) {
        *l = -(pp + b - 2.0 * f64::from(gv)).max(0.0) * inv_two_sigma2;
    }
    // Lane-wise maximum (vectorises; a plain fold is a serial dependency chain).
    let mut lanes = [f64::NEG_INFINITY; 8];
    let mut blocks = lw.chunks_exact(8);
    for block in &mut blocks {
        for (m, &v) in lanes.iter_mut().zip(block) {
            *m = if v > *m { v } else { *m };
        }
    }
    let top = blocks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f64::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut acc = [0.0f64; 8];
    let mut blocks = lw.chunks_exact_mut(8);
    for block in &mut blocks {
        for (l, s) in block.iter_mut().zip(acc.iter_mut()) {
            *l = exp_nonpositive(*l - top);
            *s += *l;
        }
    }
    for l in blocks.into_remainder() {
        *l = exp_nonpositive(*l - top);
        acc[0] += *l;
    }
    let mut inv_total = 1.0 / acc.iter().sum::<f64>();
    if proximity {
        // exp(top) = the largest weight before normalising = the kernel value of the nearest anchor
        inv_total *= exp_nonpositive(top);
    }
    for (gv, &l) in g.iter_mut().zip(lw.iter()) {
        *gv = (l * inv_total) as f32;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn weights_row_avx2(
    g: &mut [f32],
    bb: &[f64],
    pp: f64,
    inv_two_sigma2: f64,
    proximity: bool,
    lw: &mut [f64],
) {
    weights_row_body(g, bb, pp, inv_two_sigma2, proximity, lw);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
fn weights_row_avx512(
    g: &mut [f32],
    bb: &[f64],
    pp: f64,
    inv_two_sigma2: f64,
    proximity: bool,
    lw: &mut [f64],
) {
    weights_row_body(g, bb, pp, inv_two_sigma2, proximity, lw);
}

fn weights_row(
    g: &mut [f32],
    bb: &[f64],
    pp: f64,
    inv_two_sigma2: f64,
    proximity: bool,
    lw: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { weights_row_avx512(g, bb, pp, inv_two_sigma2, proximity, lw) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { weights_row_avx2(g, bb, pp, inv_two_sigma2, proximity, lw) };
        return;
    }
    weights_row_body(g, bb, pp, inv_two_sigma2, proximity, lw);
}

/// `sum(v * v)`: 16 f32 lanes (vectorises), the lanes added in f64.
fn squared_norm(v: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut blocks = v.chunks_exact(16);
    for block in &mut blocks {
        for (l, &x) in lanes.iter_mut().zip(block) {
            *l += x * x;
        }
    }
    let tail: f64 = blocks.remainder().iter().map(|&x| f64::from(x * x)).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// Shifts of a block of classes: `protos` (centred) `[cb, dim]` -> `shifts` `[cb, dim]`.
#[allow(clippy::too_many_arguments)]
fn gaussian_block(
    protos: &[f32],
    pp: &[f64],
    anchors: &[f32],
    bb: &[f64],
    drift: &[f32],
    dim: usize,
    inv_two_sigma2: f64,
    proximity: bool,
    shifts: &mut [f32],
) {
    let cb = pp.len();
    let a = bb.len();
    let mut g = vec![0.0f32; cb * a];
    // G = P' B'^T: B' is [A, dim] row-major, so B'^T has strides (1, dim).
    sgemm(cb, dim, a, protos, (dim, 1), anchors, (1, dim), &mut g);
    let mut lw = vec![0.0f64; a];
    for (row, &p) in g.chunks_exact_mut(a).zip(pp) {
        weights_row(row, bb, p, inv_two_sigma2, proximity, &mut lw);
    }
    sgemm(cb, a, dim, &g, (a, 1), drift, (dim, 1), shifts);
}

/// Gaussian-weighted mean drift of every prototype (see the block comment above); `a >= 1`.
fn gaussian_shifts(
    mut protos: Vec<f32>,
    before: &[f32],
    after: &[f32],
    dim: usize,
    sigma: f64,
    proximity: bool,
    shifts: &mut [f32],
) {
    let a = before.len() / dim;
    let c = protos.len() / dim;
    // Any common centre leaves the distances unchanged; one inside the anchor cloud keeps the
    // products (and their rounding) small. The mean of up to 64 evenly spaced anchors is enough.
    let step = a.div_ceil(64);
    let mut center = vec![0.0f32; dim];
    let mut taken = 0usize;
    for row in before.chunks_exact(dim).step_by(step) {
        for (s, &v) in center.iter_mut().zip(row) {
            *s += v;
        }
        taken += 1;
    }
    let inv = 1.0 / taken as f32;
    center.iter_mut().for_each(|s| *s *= inv);
    // One pass over the anchors: centred copy, drift, squared norm.
    let mut anchors: Vec<f32> = Vec::with_capacity(a * dim);
    let mut drift: Vec<f32> = Vec::with_capacity(a * dim);
    let mut bb = Vec::with_capacity(a);
    for (b, x) in before.chunks_exact(dim).zip(after.chunks_exact(dim)) {
        let from = anchors.len();
        anchors.extend(b.iter().zip(&center).map(|(&bv, &m)| bv - m));
        drift.extend(x.iter().zip(b).map(|(&xv, &bv)| xv - bv));
        bb.push(squared_norm(&anchors[from..]));
    }
    let mut pp = vec![0.0f64; c];
    for (row, n) in protos.chunks_exact_mut(dim).zip(pp.iter_mut()) {
        for (v, &m) in row.iter_mut().zip(&center) {
            *v -= m;
        }
        *n = squared_norm(row);
    }
    let drift = &drift[..];
    let inv_two_sigma2 = 1.0 / (2.0 * sigma * sigma);

    let threads = if c * a * dim >= PARALLEL_MIN_MACS {
        worker_threads().min(c)
    } else {
        1
    };
    if threads <= 1 {
        gaussian_block(
            &protos,
            &pp,
            &anchors,
            &bb,
            drift,
            dim,
            inv_two_sigma2,
            proximity,
            shifts,
        );
        return;
    }
    let per = c.div_ceil(threads);
    std::thread::scope(|scope| {
        let work = protos
            .chunks(per * dim)
            .zip(pp.chunks(per))
            .zip(shifts.chunks_mut(per * dim));
        let handles: Vec<_> = work
            .map(|((p, n), out)| {
                let (anchors, bb) = (&anchors, &bb);
                scope.spawn(move || {
                    gaussian_block(
                        p,
                        n,
                        anchors,
                        bb,
                        drift,
                        dim,
                        inv_two_sigma2,
                        proximity,
                        out,
                    )
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn vec(&mut self, n: usize, scale: f64) -> Vec<f32> {
            (0..n)
                .map(|_| ((self.uniform() * 2.0 - 1.0) * scale) as f32)
                .collect()
        }
    }

    fn close(a: &[f32], b: &[f64], tol: f64) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| (f64::from(x) - y).abs() <= tol * (1.0 + y.abs()))
    }

    /// Straight from the definition, in f64, one anchor at a time (stable by the max subtraction).
    fn gaussian_reference(
        protos: &[f32],
        before: &[f32],
        after: &[f32],
        dim: usize,
        sigma: f64,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        for p in protos.chunks_exact(dim) {
            let lw: Vec<f64> = before
                .chunks_exact(dim)
                .map(|b| {
                    let d2: f64 = b
                        .iter()
                        .zip(p)
                        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                        .sum();
                    -d2 / (2.0 * sigma * sigma)
                })
                .collect();
            let top = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = lw.iter().map(|l| (l - top).exp()).collect();
            let total: f64 = w.iter().sum();
            for k in 0..dim {
                let s: f64 = before
                    .chunks_exact(dim)
                    .zip(after.chunks_exact(dim))
                    .zip(&w)
                    .map(|((b, x), wi)| wi * (f64::from(x[k]) - f64::from(b[k])))
                    .sum();
                out.push(s / total);
            }
        }
        out
    }

    #[test]
    fn exp_is_accurate() {
        for i in 0..=20000 {
            let x = -(i as f64) * 0.0371;
            let (got, want) = (exp_nonpositive(x), x.exp());
            if x > -700.0 {
                assert!(
                    (got - want).abs() <= 1e-12 * want,
                    "x={x} got={got} want={want}"
                );
            } else {
                assert!(got < 1e-300);
            }
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(f64::NEG_INFINITY) < 1e-300);
    }

    #[test]
    fn add_sums_equals_update() {
        let mut a = PrototypeBank::new(2).unwrap();
        a.update(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 1, 3])
            .unwrap();
        let mut b = PrototypeBank::new(2).unwrap();
        b.update(&[1.0, 2.0], &[3]).unwrap();
        b.add_sums(&[1, 3, 7], &[3.0, 4.0, 5.0, 6.0, 0.0, 0.0], &[1, 1, 0])
            .unwrap();
        assert_eq!(a.means(), b.means());
        assert_eq!(a.counts(), b.counts());
        assert!(b.add_sums(&[1, 1], &[0.0; 4], &[1, 1]).is_err());
        assert!(b.add_sums(&[1], &[0.0; 2], &[-1]).is_err());
        assert!(b.add_sums(&[1], &[f64::NAN, 0.0], &[1]).is_err());
    }

    #[test]
    fn update_means_counts() {
        let mut bank = PrototypeBank::new(2).unwrap();
        bank.update(&[1.0, 2.0, 3.0, 4.0, 10.0, 10.0], &[5, 5, 1])
            .unwrap();
        bank.update(&[2.0, 3.0], &[5]).unwrap();
        assert_eq!(bank.means(), (vec![1, 5], vec![10.0, 10.0, 2.0, 3.0]));
        assert_eq!(bank.counts(), (vec![1, 5], vec![1, 3]));
        assert!(bank.contains(5) && !bank.contains(2));
        assert_eq!(bank.len(), 2);
    }

    #[test]
    fn set_means_is_exact_and_keeps_counts() {
        let mut bank = PrototypeBank::new(3).unwrap();
        bank.update(&[0.0; 9], &[0, 0, 0]).unwrap();
        let m = [0.1f32, -7.3, 1e-3, 3.3, 2.2, 1.1];
        bank.set_means(&[0, 9], &m).unwrap();
        assert_eq!(bank.means().1, m.to_vec());
        assert_eq!(bank.counts().1, vec![3, 1]);
        // A later update weighs the written mean by its count.
        bank.update(&[4.3, 2.2, 1.1], &[9]).unwrap();
        assert!(close(&bank.means().1[3..], &[3.8, 2.2, 1.1], 1e-6));
    }

    #[test]
    fn errors_leave_the_bank_unchanged() {
        let mut bank = PrototypeBank::new(2).unwrap();
        bank.update(&[1.0, 1.0], &[0]).unwrap();
        let before = bank.clone();
        assert!(bank.update(&[1.0, 1.0, 2.0, 2.0], &[1, -1]).is_err());
        assert!(bank.update(&[1.0, f32::NAN], &[1]).is_err());
        assert!(bank.update(&[1.0, 1.0, 1.0], &[1]).is_err());
        assert!(bank.set_means(&[3, 3], &[0.0; 4]).is_err());
        assert!(bank
            .migrate(
                &[0.0; 2],
                &[0.0; 2],
                0.0,
                MigrationMode::Gaussian,
                None,
                None
            )
            .is_err());
        assert!(bank
            .migrate(&[0.0; 2], &[0.0; 2], 1.0, MigrationMode::Target, None, None)
            .is_err());
        assert!(bank
            .migrate(
                &[0.0; 2],
                &[0.0; 2],
                1.0,
                MigrationMode::Gaussian,
                None,
                Some(&[7])
            )
            .is_err());
        assert!(bank
            .migrate(
                &[0.0; 2],
                &[0.0; 4],
                1.0,
                MigrationMode::Gaussian,
                None,
                None
            )
            .is_err());
        assert!(MigrationMode::parse("nearest").is_err());
        assert!(PrototypeBank::new(0).is_err());
        assert_eq!(bank, before);
    }

    #[test]
    fn gaussian_migration_matches_reference() {
        let mut rng = Rng(7);
        // (classes, anchors, dim, sigma, offset): the last case has anchors far from every
        // prototype (all plain weights underflow), the large one takes the threaded path.
        for &(c, a, dim, sigma, offset) in &[
            (5, 7, 3, 0.7, 0.0),
            (1, 1, 4, 0.3, 0.0),
            (9, 40, 16, 0.05, 0.0),
            (4, 6, 5, 0.5, 60.0),
            (40, 300, 400, 1.0, 0.0),
        ] {
            let mut bank = PrototypeBank::new(dim).unwrap();
            let ids: Vec<i64> = (0..c as i64).map(|i| 3 * i + 1).collect();
            let protos = rng.vec(c * dim, 1.0);
            bank.set_means(&ids, &protos).unwrap();
            let before: Vec<f32> = rng
                .vec(a * dim, 1.0)
                .iter()
                .map(|v| v + offset as f32)
                .collect();
            let after: Vec<f32> = before
                .iter()
                .zip(rng.vec(a * dim, 0.1))
                .map(|(b, d)| b + d)
                .collect();
            let want = gaussian_reference(&protos, &before, &after, dim, sigma);
            let (moved, shifts) = bank
                .migrate(&before, &after, sigma, MigrationMode::Gaussian, None, None)
                .unwrap();
            assert_eq!(moved, ids);
            assert!(close(&shifts, &want, 1e-5), "c={c} a={a} dim={dim}");
            let expect: Vec<f64> = protos
                .iter()
                .zip(&want)
                .map(|(&p, &s)| f64::from(p) + s)
                .collect();
            assert!(close(&bank.means().1, &expect, 1e-5));
        }
    }

    #[test]
    fn proximity_migration_scales_by_the_nearest_kernel_value() {
        let mut rng = Rng(11);
        let (c, a, dim, sigma) = (6usize, 9usize, 5usize, 0.8f64);
        let protos = rng.vec(c * dim, 1.0);
        let before = rng.vec(a * dim, 1.0);
        let after: Vec<f32> = before
            .iter()
            .zip(rng.vec(a * dim, 0.1))
            .map(|(b, d)| b + d)
            .collect();
        let ids: Vec<i64> = (0..c as i64).collect();
        let mut bank = PrototypeBank::new(dim).unwrap();
        bank.set_means(&ids, &protos).unwrap();
        let mean = gaussian_reference(&protos, &before, &after, dim, sigma);
        let (_, shifts) = bank
            .migrate(&before, &after, sigma, MigrationMode::Proximity, None, None)
            .unwrap();
        let mut want = Vec::new();
        for (p, m) in protos.chunks_exact(dim).zip(mean.chunks_exact(dim)) {
            let d2_min = before
                .chunks_exact(dim)
                .map(|b| {
                    b.iter()
                        .zip(p)
                        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            let scale = (-d2_min / (2.0 * sigma * sigma)).exp();
            want.extend(m.iter().map(|v| v * scale));
        }
        assert!(close(&shifts, &want, 1e-5));
        // far from every anchor: (almost) no move
        let mut far = PrototypeBank::new(dim).unwrap();
        far.set_means(&[0], &vec![50.0f32; dim]).unwrap();
        let (_, s) = far
            .migrate(&before, &after, sigma, MigrationMode::Proximity, None, None)
            .unwrap();
        assert!(s.iter().all(|v| v.abs() < 1e-12));
    }

    #[test]
    fn target_migration_and_class_subset() {
        let mut bank = PrototypeBank::new(2).unwrap();
        bank.set_means(&[0, 1, 2], &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0])
            .unwrap();
        let before = [0.0, 0.0, 5.0, 5.0, 1.0, 1.0];
        let after = [1.0, 0.0, 5.0, 7.0, 1.0, 2.0];
        let (moved, shifts) = bank
            .migrate(
                &before,
                &after,
                1.0,
                MigrationMode::Target,
                Some(&[1, 2, 1]),
                Some(&[1, 0]),
            )
            .unwrap();
        assert_eq!(moved, vec![1, 0]);
        assert_eq!(shifts, vec![0.5, 0.5, 0.0, 0.0]);
        assert_eq!(bank.means().1, vec![0.0, 0.0, 1.5, 1.5, 2.0, 2.0]);
        // No anchors: nothing moves.
        let (_, shifts) = bank
            .migrate(&[], &[], 1.0, MigrationMode::Gaussian, None, None)
            .unwrap();
        assert_eq!(shifts, vec![0.0; 6]);
    }

    #[test]
    fn state_round_trip() {
        let mut bank = PrototypeBank::new(2).unwrap();
        bank.update(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[8, 2, 8])
            .unwrap();
        let state = bank.to_state();
        assert_eq!(state.class_ids, vec![2, 8]);
        let back = PrototypeBank::from_state(state.clone()).unwrap();
        assert_eq!(back.to_state(), state);
        assert_eq!(back.means(), bank.means());
        let mut bad = state;
        bad.counts[0] = 0;
        assert!(PrototypeBank::from_state(bad).is_err());
    }
}
