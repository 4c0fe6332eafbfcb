//! The PyO3 bindings of `segpcl._core` (feature `python`), one file per binding group; the module
//! itself is registered in `lib.rs`.
//!
//! - [`graph`]: the TSGR functions `select_key_edges` and `select_neighbors`;
//! - [`prototypes`]: the `PrototypeBank` class;
//! - [`scatter`]: the `ClassScatter` class;
//! - [`info`]: the `build_info` function;
//! - [`convert`]: the shared conversions (numpy array arguments and results, `ValueError`s).

pub(crate) mod convert;
pub(crate) mod graph;
pub(crate) mod info;
pub(crate) mod prototypes;
pub(crate) mod scatter;
