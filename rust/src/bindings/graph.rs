//! TSGR bindings: `select_key_edges` and `select_neighbors` over [`crate::graph`].

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::convert::{array_arg, data, ids_arg, invalid, matrix, shape_str, value_error, Kind};
use crate::graph;

/// `(edges int64 [E, 2], weights float32 [E])`.
type EdgeArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<f32>>);

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
pub(crate) fn select_key_edges<'py>(
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
pub(crate) fn select_neighbors<'py>(
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
