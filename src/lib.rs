//! kato_gpu: exact similarity matching of one state against millions of learned patterns.
//!
//! The core (everything outside `python`) is plain Rust and knows nothing of Python:
//! - [`metrics`]: the `difflib` and `lcs` metrics and the similarity formula;
//! - [`ordering`]: the result order;
//! - [`store`]: the columnar pattern store;
//! - [`matcher`]: the tiered matcher that scans the store on all cores.

pub mod cuda;
pub mod device;
pub mod error;
pub mod kpi;
pub mod matcher;
pub mod metrics;
mod name_index;
pub mod ordering;
pub mod prediction;
pub mod store;
pub mod sync;

#[cfg(test)]
mod testing;

#[cfg(feature = "python")]
mod python;

pub use error::{KatoError, Result};
pub use matcher::{Matcher, TierCounts};
pub use metrics::Metric;
