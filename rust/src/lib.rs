//! segpcl-core: the native core of segpcl.
//!
//! - [`graph`]: TSGR key-relation edge selection on a class-similarity matrix;
//! - [`prototypes`]: the streaming prototype bank and anchor-induced prototype migration;
//! - [`error`]: the one error type (invalid input).
//!
//! Those modules are plain Rust on slices and Vecs, tested by `cargo test --no-default-features`.
//! With the `python` feature (default; maturin builds with `extension-module`) this file also holds
//! the thin PyO3 bindings, the Python module `segpcl._core`: they convert numpy arrays, release the
//! GIL for the work, and raise `ValueError` on invalid input. The typed stub is
//! `python/segpcl/_core.pyi`.

pub mod error;
pub mod graph;
pub mod prototypes;

/// Worker threads of the parallel loops: `SEGPCL_NUM_THREADS` when set to an integer >= 1,
/// else the machine's available parallelism.
pub(crate) fn worker_threads() -> usize {
    std::env::var("SEGPCL_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(feature = "python")]
mod bindings {
    use numpy::ndarray::{arr0, Array2};
    use numpy::{
        Element, IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
        PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
    };
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyMapping};

    use crate::error::InvalidInput;
    use crate::graph;
    use crate::prototypes::{BankState, MigrationMode, PrototypeBank as Bank};

    /// `(edges int64 [E, 2], weights float32 [E])`.
    type EdgeArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<f32>>);
    /// `(class_ids int64 [C], prototypes float32 [C, dim])`.
    type MeanArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray2<f32>>);

    fn invalid(e: InvalidInput) -> PyErr {
        PyValueError::new_err(e.0)
    }

    fn value_error(message: String) -> PyErr {
        PyValueError::new_err(message)
    }

    fn shape_str(shape: &[usize]) -> String {
        let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", parts.join(", "))
    }

    /// What an array argument may be converted from.
    #[derive(Clone, Copy)]
    enum Kind {
        /// float32, converted from any float or integer dtype.
        Float32,
        /// float64, converted from any float or integer dtype.
        Float64,
        /// int64, converted (safely) from any integer dtype.
        Int64,
    }

    impl Kind {
        fn dtype(self) -> &'static str {
            match self {
                Kind::Float32 => "float32",
                Kind::Float64 => "float64",
                Kind::Int64 => "int64",
            }
        }
        fn accepts(self, kind: u8) -> bool {
            match self {
                Kind::Float32 | Kind::Float64 => matches!(kind, b'f' | b'i' | b'u'),
                Kind::Int64 => matches!(kind, b'i' | b'u'),
            }
        }
    }

    /// Fetch an array argument as a C-contiguous, aligned, native `T` array of rank `ndim`.
    ///
    /// Arrays already like that are borrowed; anything else (other dtypes, non-contiguous views, lists)
    /// goes through numpy once. Errors are `ValueError`s naming `name` and `shape` (e.g. `"[N, dim]"`).
    fn array_arg<'py, T: Element>(
        obj: &Bound<'py, PyAny>,
        name: &str,
        shape: &str,
        kind: Kind,
    ) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
        let ndim = shape.matches(',').count() + 1;
        let expected = || {
            format!(
                "{name} must be a {ndim}-D {} array of shape {shape}",
                kind.dtype()
            )
        };
        let direct = obj
            .cast::<PyArrayDyn<T>>()
            .ok()
            .filter(|a| a.is_c_contiguous())
            .and_then(|a| a.try_readonly().ok())
            .filter(|r| r.as_slice().is_ok());
        let array = match direct {
            Some(array) => array,
            None => {
                let np = obj.py().import("numpy")?;
                let any = np.call_method1("asarray", (obj,)).map_err(|e| {
                    value_error(format!(
                        "{}, got an object numpy cannot convert: {e}",
                        expected()
                    ))
                })?;
                let untyped = any.cast::<PyUntypedArray>()?;
                let dtype = untyped.dtype();
                if untyped.len() > 0 && !kind.accepts(dtype.kind()) {
                    return Err(value_error(format!("{}, got dtype {dtype}", expected())));
                }
                let kwargs = PyDict::new(obj.py());
                // Ids must convert exactly (an empty array of any dtype is fine); floats may round.
                let safe = matches!(kind, Kind::Int64) && untyped.len() > 0;
                kwargs.set_item("casting", if safe { "safe" } else { "unsafe" })?;
                let converted = any
                    .call_method("astype", (kind.dtype(),), Some(&kwargs))
                    .map_err(|e| value_error(format!("{}, got dtype {dtype}: {e}", expected())))?;
                let converted = np.call_method1("ascontiguousarray", (converted,))?;
                let typed = converted
                    .cast_into::<PyArrayDyn<T>>()
                    .map_err(PyErr::from)?;
                typed
                    .try_readonly()
                    .map_err(|e| value_error(format!("{name}: {e}")))?
            }
        };
        if array.ndim() != ndim {
            return Err(value_error(format!(
                "{}, got shape {}",
                expected(),
                shape_str(array.shape())
            )));
        }
        Ok(array)
    }

    /// The data of an array returned by `array_arg` (always C-contiguous and aligned).
    fn data<'a, T: Element>(array: &'a PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
        array.as_slice().map_err(|e| value_error(e.to_string()))
    }

    fn matrix<'py, T: Element>(
        py: Python<'py>,
        rows: usize,
        cols: usize,
        values: Vec<T>,
    ) -> PyResult<Bound<'py, PyArray2<T>>> {
        let array =
            Array2::from_shape_vec((rows, cols), values).map_err(|e| value_error(e.to_string()))?;
        Ok(array.into_pyarray(py))
    }

    /// The `sim` argument of the graph functions: a square float32 matrix and its size C.
    fn square_arg<'py>(sim: &Bound<'py, PyAny>) -> PyResult<(PyReadonlyArrayDyn<'py, f32>, usize)> {
        let sim = array_arg::<f32>(sim, "sim", "[C, C]", Kind::Float32)?;
        let shape = sim.shape().to_vec();
        if shape[0] != shape[1] {
            return Err(value_error(format!(
                "sim must be a square float32 array of shape [C, C], got shape {}",
                shape_str(&shape)
            )));
        }
        Ok((sim, shape[0]))
    }

    /// Key-relation edges of a class-similarity matrix sim (float32 [C, C]).
    ///
    /// sim is symmetrised first (its mean with its transpose where they differ). Each node keeps
    /// its k most similar other nodes (ties toward the lower index; k=None: none) and, with a
    /// threshold, every pair with similarity >= threshold. Returns (edges int64 [E, 2] with i < j,
    /// sorted, each once; weights float32 [E]). Full contract: segpcl/_core.pyi.
    #[pyfunction]
    #[pyo3(signature = (sim, k, threshold=None))]
    fn select_key_edges<'py>(
        py: Python<'py>,
        sim: &Bound<'py, PyAny>,
        k: Option<i64>,
        threshold: Option<f64>,
    ) -> PyResult<EdgeArrays<'py>> {
        let k = graph::validate_k(k).map_err(invalid)?;
        let (sim, c) = square_arg(sim)?;
        let values = data(&sim)?;
        let edges = py
            .detach(|| graph::select_key_edges(values, c, k, threshold))
            .map_err(invalid)?;
        let flat: Vec<i64> = edges
            .edges
            .iter()
            .flat_map(|&[i, j]| [i as i64, j as i64])
            .collect();
        Ok((
            matrix(py, edges.weights.len(), 2, flat)?,
            edges.weights.into_pyarray(py),
        ))
    }

    /// Rooted neighbourhoods (TSGR rooted mode): for each root r, the min(k, C - 1) columns j != r
    /// with the largest sim[r, j], best first, ties toward the lower j. sim float32 [C, C] is read as
    /// given; roots int64 [R] in [0, C); k >= 1. Returns int64 [R, min(k, C - 1)].
    #[pyfunction]
    fn select_neighbors<'py>(
        py: Python<'py>,
        sim: &Bound<'py, PyAny>,
        roots: &Bound<'py, PyAny>,
        k: i64,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        if k < 1 {
            return Err(value_error(format!("k must be an integer >= 1, got {k}")));
        }
        let (sim, c) = square_arg(sim)?;
        let roots = ids_arg(roots, "roots", "R")?;
        let (values, ids) = (data(&sim)?, data(&roots)?);
        let k = usize::try_from(k).unwrap_or(usize::MAX);
        let picked = py
            .detach(|| graph::select_neighbors(values, c, ids, k))
            .map_err(invalid)?;
        let kk = k.min(c.saturating_sub(1));
        let flat: Vec<i64> = picked.into_iter().map(|j| j as i64).collect();
        matrix(py, ids.len(), kk, flat)
    }

    /// How this extension was built: {"version": crate version, "profile": "release" or "debug"}.
    #[pyfunction]
    fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let info = PyDict::new(py);
        info.set_item("version", env!("CARGO_PKG_VERSION"))?;
        info.set_item(
            "profile",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        )?;
        Ok(info)
    }

    /// Streaming per-class prototypes (float64 sums and counts per class id) with anchor-induced
    /// migration; checkpoint with state_dict() / PrototypeBank.from_state(). Full contract:
    /// segpcl/_core.pyi.
    #[pyclass(name = "PrototypeBank", module = "segpcl._core")]
    struct PyPrototypeBank {
        inner: Bank,
    }

    impl PyPrototypeBank {
        fn rows_arg<'py>(
            &self,
            obj: &Bound<'py, PyAny>,
            name: &str,
            rows: &str,
        ) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
            let dim = self.inner.dim();
            let array = array_arg::<f32>(obj, name, &format!("[{rows}, dim]"), Kind::Float32)?;
            if array.shape()[1] != dim {
                return Err(value_error(format!(
                    "{name} must have shape [{rows}, dim] with dim = {dim}, got shape {}",
                    shape_str(array.shape())
                )));
            }
            Ok(array)
        }
    }

    fn ids_arg<'py>(
        obj: &Bound<'py, PyAny>,
        name: &str,
        len: &str,
    ) -> PyResult<PyReadonlyArrayDyn<'py, i64>> {
        array_arg::<i64>(obj, name, &format!("[{len}]"), Kind::Int64)
    }

    fn check_len(name: &str, got: usize, want: usize, want_name: &str) -> PyResult<()> {
        if got != want {
            return Err(value_error(format!(
                "{name} must have shape [{want_name}] = [{want}], got [{got}]"
            )));
        }
        Ok(())
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
            let features = self.rows_arg(features, "features", "N")?;
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
            let protos = self.rows_arg(prototypes, "prototypes", "K")?;
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
            let before = self.rows_arg(before, "before", "A")?;
            let after = self.rows_arg(after, "after", "A")?;
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

    /// Native core of segpcl: TSGR key-edge selection and the prototype bank.
    #[pymodule]
    fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add_function(wrap_pyfunction!(select_key_edges, m)?)?;
        m.add_function(wrap_pyfunction!(select_neighbors, m)?)?;
        m.add_function(wrap_pyfunction!(build_info, m)?)?;
        m.add_class::<PyPrototypeBank>()?;
        Ok(())
    }
}
