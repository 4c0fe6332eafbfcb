//! segpcl-core: the native core of segpcl.
//!
//! - [`graph`]: TSGR key-relation edge selection on a class-similarity matrix;
//! - [`prototypes`]: the streaming prototype bank and anchor-induced prototype migration;
//! - [`scatter`]: streaming per-class means and covariances (sums of outer products);
//! - [`error`]: the one error type (invalid input).
//!
//! Those modules are plain Rust on slices and Vecs, tested by `cargo test --no-default-features`.
//! With the `python` feature (default; maturin builds with `extension-module`) the crate also holds
//! the thin PyO3 bindings in `bindings/`, registered below as the Python module `segpcl._core`:
//! they convert numpy arrays, release the GIL for the work, and raise `ValueError` on invalid
//! input. The typed stub is `python/segpcl/_core.pyi`.

pub mod error;
pub mod graph;
pub mod prototypes;
pub mod scatter;

#[cfg(feature = "python")]
mod bindings;

/// Worker threads of the parallel loops: `SEGPCL_NUM_THREADS` when set to an integer >= 1,
/// else the machine's available parallelism.
pub(crate) fn worker_threads() -> usize {
    std::env::var("SEGPCL_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Native core of segpcl: TSGR key-edge selection and the prototype bank.
#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _core(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::prelude::*;

    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(bindings::graph::select_key_edges, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::graph::select_neighbors, m)?)?;
    m.add_function(wrap_pyfunction!(bindings::info::build_info, m)?)?;
    m.add_class::<bindings::prototypes::PyPrototypeBank>()?;
    m.add_class::<bindings::scatter::PyClassScatter>()?;
    Ok(())
}
