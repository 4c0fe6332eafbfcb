//! The one error type of the pure-Rust core: invalid input, described for a person.
//!
//! The Python bindings turn it into `ValueError` with the same message; the algorithms never panic
//! on bad input, they return this instead.

use std::fmt;

/// Invalid input: a wrong shape, a non-finite value, an out-of-range parameter.
///
/// The message names the argument and what was expected, e.g.
/// `sim must have shape [C, C], got [3, 4]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput(pub String);

impl InvalidInput {
    /// Build an error from anything printable.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, InvalidInput>;

/// Fail unless every value is finite; `name` is the argument named in the message.
pub fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    // Branch-free scan per block (vectorises), exact position only on failure.
    let all_finite = values
        .chunks(1024)
        .all(|block| block.iter().fold(true, |ok, v| ok & v.is_finite()));
    if all_finite {
        return Ok(());
    }
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(pos) => Err(InvalidInput(format!(
            "{name} must hold only finite values, found {} at flat index {pos}",
            values[pos]
        ))),
    }
}

/// `check_finite` for f64 values.
pub fn check_finite_f64(name: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(pos) => Err(InvalidInput(format!(
            "{name} must hold only finite values, found {} at flat index {pos}",
            values[pos]
        ))),
    }
}
