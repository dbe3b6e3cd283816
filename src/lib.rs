//! kato_gpu: exact similarity matching of one state against millions of learned patterns.
//!
//! The core (everything outside `python`) is plain Rust and knows nothing of Python:
//! - [`metrics`]: the `difflib` and `lcs` metrics and the similarity formula;
//! - [`ordering`]: the result order;
//! - [`store`]: the columnar pattern store;
//! - [`matcher`]: the tiered matcher that scans the store on all cores;
//! - [`vocabulary`]: the symbol <-> id vocabulary and its crash-safe file store.

pub mod cuda;
pub mod error;
pub mod kpi;
pub mod matcher;
pub mod metrics;
mod name_index;
pub mod ordering;
pub mod prediction;
pub mod store;
pub mod sync;
pub mod vocabulary;

#[cfg(test)]
mod testing;

#[cfg(feature = "python")]
mod python;

pub use error::{KatoError, Result};
pub use matcher::{Matcher, TierCounts};
pub use metrics::Metric;
