//! The `ClassScatter` class over [`crate::scatter::ClassScatter`].

use numpy::ndarray::{arr0, Array3};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping};

use super::convert::{
    array_arg, check_len, data, ids_arg, invalid, matrix, rows_arg, shape_str, value_error, Kind,
};
use crate::scatter::{ClassScatter as Scatter, ScatterState};

/// `(class_ids int64 [C], means float64 [C, dim], covariances float64 [C, dim, dim], counts int64 [C])`.
type Statistics<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray3<f64>>,
    Bound<'py, PyArray1<i64>>,
);

fn cube(
    py: Python<'_>,
    n: usize,
    dim: usize,
    values: Vec<f64>,
) -> PyResult<Bound<'_, PyArray3<f64>>> {
    let array =
        Array3::from_shape_vec((n, dim, dim), values).map_err(|e| value_error(e.to_string()))?;
    Ok(array.into_pyarray(py))
}

/// The (sums, scatters, counts) arguments of `add`/`from_state`, checked against `k` classes.
fn sums_args<'py>(
    dim: usize,
    k: usize,
    in_state: bool,
    sums: &Bound<'py, PyAny>,
    scatters: &Bound<'py, PyAny>,
    counts: &Bound<'py, PyAny>,
) -> PyResult<(Vec<f64>, Vec<f64>, Vec<i64>)> {
    let name = |n: &str| {
        if in_state {
            format!("state['{n}']")
        } else {
            n.to_string()
        }
    };
    let s = array_arg::<f64>(sums, &name("sums"), "[K, dim]", Kind::Float64)?;
    if s.shape() != [k, dim] {
        return Err(value_error(format!(
            "{} must have shape [K, dim] = [{k}, {dim}], got shape {}",
            name("sums"),
            shape_str(s.shape())
        )));
    }
    let sc = array_arg::<f64>(scatters, &name("scatters"), "[K, dim, dim]", Kind::Float64)?;
    if sc.shape() != [k, dim, dim] {
        return Err(value_error(format!(
            "{} must have shape [K, dim, dim] = [{k}, {dim}, {dim}], got shape {}",
            name("scatters"),
            shape_str(sc.shape())
        )));
    }
    let n = ids_arg(counts, &name("counts"), "K")?;
    check_len(&name("counts"), n.len(), k, "K")?;
    Ok((data(&s)?.to_vec(), data(&sc)?.to_vec(), data(&n)?.to_vec()))
}

/// Streaming per-class feature sums, sums of outer products and counts (float64), giving class
/// means and unbiased covariances; checkpoint or merge with state_dict() / add() /
/// ClassScatter.from_state(). Full contract: segpcl/_core.pyi.
#[pyclass(name = "ClassScatter", module = "segpcl._core")]
pub(crate) struct PyClassScatter {
    inner: Scatter,
}

#[pymethods]
impl PyClassScatter {
    #[new]
    fn new(dim: i64) -> PyResult<Self> {
        if dim < 1 {
            return Err(value_error(format!("dim must be >= 1, got {dim}")));
        }
        Ok(Self {
            inner: Scatter::new(dim as usize).map_err(invalid)?,
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
        let inner = &mut self.inner;
        py.detach(|| inner.update(f, l)).map_err(invalid)
    }

    /// Add per-class sums float64 [K, dim], scatters float64 [K, dim, dim] and counts int64 [K]
    /// (>= 0) to class_ids int64 [K] (unique).
    fn add(
        &mut self,
        py: Python<'_>,
        class_ids: &Bound<'_, PyAny>,
        sums: &Bound<'_, PyAny>,
        scatters: &Bound<'_, PyAny>,
        counts: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ids = ids_arg(class_ids, "class_ids", "K")?;
        let (s, sc, n) = sums_args(self.inner.dim(), ids.len(), false, sums, scatters, counts)?;
        let i = data(&ids)?;
        let inner = &mut self.inner;
        py.detach(|| inner.add(i, &s, &sc, &n)).map_err(invalid)
    }

    /// (class_ids int64 [C], means float64 [C, dim], covariances float64 [C, dim, dim], counts
    /// int64 [C]), ids ascending; unbiased covariances (zero for a class of one sample).
    fn statistics<'py>(&self, py: Python<'py>) -> PyResult<Statistics<'py>> {
        let (ids, means, covs, counts) = py.detach(|| self.inner.statistics());
        let (n, dim) = (ids.len(), self.inner.dim());
        Ok((
            ids.into_pyarray(py),
            matrix(py, n, dim, means)?,
            cube(py, n, dim, covs)?,
            counts.into_pyarray(py),
        ))
    }

    /// Plain numpy state: dim, class_ids, sums, scatters (float64), counts.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = self.inner.to_state();
        let n = state.class_ids.len();
        let out = PyDict::new(py);
        out.set_item("dim", arr0(state.dim as i64).into_pyarray(py))?;
        out.set_item("class_ids", state.class_ids.into_pyarray(py))?;
        out.set_item("sums", matrix(py, n, state.dim, state.sums)?)?;
        out.set_item("scatters", cube(py, n, state.dim, state.scatters)?)?;
        out.set_item("counts", state.counts.into_pyarray(py))?;
        Ok(out)
    }

    /// Rebuild from state_dict()'s output (any mapping with the same keys).
    #[staticmethod]
    fn from_state(state: &Bound<'_, PyAny>) -> PyResult<Self> {
        let state = state.cast::<PyMapping>().map_err(|_| {
            value_error("state must be a mapping (the dict state_dict() returns)".into())
        })?;
        let get = |key: &str| {
            state.get_item(key).map_err(|_| {
                value_error(format!(
                    "state is missing {key:?} (keys: dim, class_ids, sums, scatters, counts)"
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
        let (sums, scatters, counts) = sums_args(
            dim as usize,
            ids.len(),
            true,
            &get("sums")?,
            &get("scatters")?,
            &get("counts")?,
        )?;
        let state = ScatterState {
            dim: dim as usize,
            class_ids: data(&ids)?.to_vec(),
            sums,
            scatters,
            counts,
        };
        Ok(Self {
            inner: Scatter::from_state(state).map_err(invalid)?,
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
            "ClassScatter(dim={}, classes={})",
            self.inner.dim(),
            self.inner.len()
        )
    }
}
