//! `build_info`: how the extension was built.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// How this extension was built: {"version": crate version, "profile": "release" or "debug"}.
#[pyfunction]
pub(crate) fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
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
