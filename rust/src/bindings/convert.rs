//! Conversions shared by the bindings: numpy array arguments (borrowed when already C-contiguous
//! and of the right dtype, else converted once through numpy), result matrices, and the
//! `ValueError`s for invalid input.

use numpy::ndarray::Array2;
use numpy::{
    Element, IntoPyArray, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::InvalidInput;

pub(crate) fn invalid(e: InvalidInput) -> PyErr {
    PyValueError::new_err(e.0)
}

pub(crate) fn value_error(message: String) -> PyErr {
    PyValueError::new_err(message)
}

pub(crate) fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// What an array argument may be converted from.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
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
pub(crate) fn array_arg<'py, T: Element>(
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

/// An int64 id array argument of shape `[len]`.
pub(crate) fn ids_arg<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    len: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, i64>> {
    array_arg::<i64>(obj, name, &format!("[{len}]"), Kind::Int64)
}

/// Check that the 1-D argument `name` has length `want` (the size called `want_name`).
pub(crate) fn check_len(name: &str, got: usize, want: usize, want_name: &str) -> PyResult<()> {
    if got != want {
        return Err(value_error(format!(
            "{name} must have shape [{want_name}] = [{want}], got [{got}]"
        )));
    }
    Ok(())
}

/// The data of an array returned by `array_arg` (always C-contiguous and aligned).
pub(crate) fn data<'a, T: Element>(array: &'a PyReadonlyArrayDyn<'_, T>) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|e| value_error(e.to_string()))
}

/// A row-major `values` as a numpy array of shape `[rows, cols]`.
pub(crate) fn matrix<'py, T: Element>(
    py: Python<'py>,
    rows: usize,
    cols: usize,
    values: Vec<T>,
) -> PyResult<Bound<'py, PyArray2<T>>> {
    let array =
        Array2::from_shape_vec((rows, cols), values).map_err(|e| value_error(e.to_string()))?;
    Ok(array.into_pyarray(py))
}

/// A float32 `[rows, dim]` array argument whose second axis must be `dim` (rows: the name of the first axis).
pub(crate) fn rows_arg<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    rows: &str,
    dim: usize,
) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    let array = array_arg::<f32>(obj, name, &format!("[{rows}, dim]"), Kind::Float32)?;
    if array.shape()[1] != dim {
        return Err(value_error(format!(
            "{name} must have shape [{rows}, dim] with dim = {dim}, got shape {}",
            shape_str(array.shape())
        )));
    }
    Ok(array)
}
