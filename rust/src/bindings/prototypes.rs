//! The `PrototypeBank` class over [`crate::prototypes::PrototypeBank`].

use numpy::ndarray::arr0;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping};

use super::convert::{
    array_arg, check_len, data, ids_arg, invalid, matrix, rows_arg, shape_str, value_error, Kind,
};
use crate::prototypes::{BankState, MigrationMode, PrototypeBank as Bank};

/// `(class_ids int64 [C], prototypes float32 [C, dim])`.
type MeanArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray2<f32>>);

/// Streaming per-class prototypes (float64 sums and counts per class id) with anchor-induced
/// migration; checkpoint with state_dict() / PrototypeBank.from_state(). Full contract:
/// segpcl/_core.pyi.
#[pyclass(name = "PrototypeBank", module = "segpcl._core")]
pub(crate) struct PyPrototypeBank {
    inner: Bank,
}

#[pymethods]
impl PyPrototypeBank {
    #[new]
    fn new(dim: i64) -> PyResult<Self> {
        if dim < 1 {
            return Err(value_error(format!("dim must be >= 1, got {dim}")));
        }
        Ok(Self {
            inner: Bank::new(dim as usize).map_err(invalid)?,
        })
    }

    /// Feature dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Add samples: features float32 [N, dim], labels int64 [N] (class ids >= 0).
    fn update(
        &mut self,
        py: Python<'_>,
        features: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let features = rows_arg(features, "features", "N", self.inner.dim())?;
        let labels = ids_arg(labels, "labels", "N")?;
        check_len("labels", labels.len(), features.shape()[0], "N")?;
        let (f, l) = (data(&features)?, data(&labels)?);
        let bank = &mut self.inner;
        py.detach(|| bank.update(f, l)).map_err(invalid)
    }

    /// Add per-class sums float64 [K, dim] and counts int64 [K] (>= 0) to class_ids int64 [K].
    fn add_sums(
        &mut self,
        py: Python<'_>,
        class_ids: &Bound<'_, PyAny>,
        sums: &Bound<'_, PyAny>,
        counts: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let dim = self.inner.dim();
        let ids = ids_arg(class_ids, "class_ids", "K")?;
        let sums = array_arg::<f64>(sums, "sums", "[K, dim]", Kind::Float64)?;
        let counts = ids_arg(counts, "counts", "K")?;
        if sums.shape() != [ids.len(), dim] {
            return Err(value_error(format!(
                "sums must have shape [K, dim] = [{}, {dim}], got shape {}",
                ids.len(),
                shape_str(sums.shape())
            )));
        }
        check_len("counts", counts.len(), ids.len(), "K")?;
        let (i, s, n) = (data(&ids)?, data(&sums)?, data(&counts)?);
        let bank = &mut self.inner;
        py.detach(|| bank.add_sums(i, s, n)).map_err(invalid)
    }

    /// (class_ids int64 [C], prototypes float32 [C, dim]), ids ascending.
    fn means<'py>(&self, py: Python<'py>) -> PyResult<MeanArrays<'py>> {
        let (ids, means) = py.detach(|| self.inner.means());
        let n = ids.len();
        Ok((
            ids.into_pyarray(py),
            matrix(py, n, self.inner.dim(), means)?,
        ))
    }

    /// (class_ids int64 [C], counts int64 [C]), ids ascending.
    fn counts<'py>(
        &self,
        py: Python<'py>,
    ) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>) {
        let (ids, counts) = self.inner.counts();
        (ids.into_pyarray(py), counts.into_pyarray(py))
    }

    /// Overwrite (or create) the means of class_ids int64 [K] with prototypes float32 [K, dim].
    fn set_means(
        &mut self,
        py: Python<'_>,
        class_ids: &Bound<'_, PyAny>,
        prototypes: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let protos = rows_arg(prototypes, "prototypes", "K", self.inner.dim())?;
        let ids = ids_arg(class_ids, "class_ids", "K")?;
        check_len("class_ids", ids.len(), protos.shape()[0], "K")?;
        let (i, p) = (data(&ids)?, data(&protos)?);
        let bank = &mut self.inner;
        py.detach(|| bank.set_means(i, p)).map_err(invalid)
    }

    /// Move prototypes by the anchor drift after - before (float32 [A, dim] each).
    ///
    /// mode="gaussian": each prototype moves by the mean drift weighted by
    /// exp(-||before_a - P_c||^2 / (2 sigma^2)); mode="target": by the mean drift of the anchors
    /// whose anchor_targets is its class. classes: which to move (default: all). Returns the
    /// shifts float32 [K, dim] in the order of classes (default: ascending ids).
    #[pyo3(signature = (before, after, sigma, mode="gaussian", anchor_targets=None, classes=None))]
    #[allow(clippy::too_many_arguments)]
    fn migrate<'py>(
        &mut self,
        py: Python<'py>,
        before: &Bound<'py, PyAny>,
        after: &Bound<'py, PyAny>,
        sigma: f64,
        mode: &str,
        anchor_targets: Option<&Bound<'py, PyAny>>,
        classes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let mode = MigrationMode::parse(mode).map_err(invalid)?;
        let before = rows_arg(before, "before", "A", self.inner.dim())?;
        let after = rows_arg(after, "after", "A", self.inner.dim())?;
        let a = before.shape()[0];
        if after.shape()[0] != a {
            return Err(value_error(format!(
                "after must have the shape of before, [A, dim] = [{a}, {}], got shape {}",
                self.inner.dim(),
                shape_str(after.shape())
            )));
        }
        let targets = match (mode, anchor_targets) {
            (MigrationMode::Target, Some(t)) => Some(ids_arg(t, "anchor_targets", "A")?),
            _ => None,
        };
        if let Some(t) = &targets {
            check_len("anchor_targets", t.len(), a, "A")?;
        }
        let classes = classes.map(|c| ids_arg(c, "classes", "K")).transpose()?;
        let (b, x) = (data(&before)?, data(&after)?);
        let t = targets.as_ref().map(data).transpose()?;
        let c = classes.as_ref().map(data).transpose()?;
        let bank = &mut self.inner;
        let (moved, shifts) = py
            .detach(|| bank.migrate(b, x, sigma, mode, t, c))
            .map_err(invalid)?;
        matrix(py, moved.len(), self.inner.dim(), shifts)
    }

    /// Plain numpy state for checkpoints: dim, class_ids, sums (float64), counts.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.inner.to_state();
        let out = PyDict::new(py);
        let n = state.class_ids.len();
        out.set_item("dim", arr0(state.dim as i64).into_pyarray(py))?;
        out.set_item("class_ids", state.class_ids.into_pyarray(py))?;
        out.set_item("sums", matrix(py, n, state.dim, state.sums)?)?;
        out.set_item("counts", state.counts.into_pyarray(py))?;
        Ok(out)
    }

    /// Rebuild a bank from state_dict()'s output (any mapping with the same keys).
    #[staticmethod]
    fn from_state(state: &Bound<'_, PyAny>) -> PyResult<Self> {
        let state = state.cast::<PyMapping>().map_err(|_| {
            value_error("state must be a mapping (the dict state_dict() returns)".into())
        })?;
        let get = |key: &str| {
            state.get_item(key).map_err(|_| {
                value_error(format!(
                    "state is missing {key:?} (keys: dim, class_ids, sums, counts)"
                ))
            })
        };
        let dim: i64 = get("dim")?
            .extract()
            .map_err(|_| value_error("state['dim'] must be an integer".into()))?;
        if dim < 1 {
            return Err(value_error(format!("state['dim'] must be >= 1, got {dim}")));
        }
        let ids = ids_arg(&get("class_ids")?, "state['class_ids']", "C")?;
        let sums = array_arg::<f64>(&get("sums")?, "state['sums']", "[C, dim]", Kind::Float64)?;
        let counts = ids_arg(&get("counts")?, "state['counts']", "C")?;
        let n = ids.len();
        if sums.shape() != [n, dim as usize] {
            return Err(value_error(format!(
                "state['sums'] must have shape [C, dim] = [{n}, {dim}], got shape {}",
                shape_str(sums.shape())
            )));
        }
        let state = BankState {
            dim: dim as usize,
            class_ids: data(&ids)?.to_vec(),
            sums: data(&sums)?.to_vec(),
            counts: data(&counts)?.to_vec(),
        };
        Ok(Self {
            inner: Bank::from_state(state).map_err(invalid)?,
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, class_id: &Bound<'_, PyAny>) -> bool {
        class_id
            .extract::<i64>()
            .is_ok_and(|id| self.inner.contains(id))
    }

    fn __repr__(&self) -> String {
        format!(
            "PrototypeBank(dim={}, classes={})",
            self.inner.dim(),
            self.inner.len()
        )
    }
}
