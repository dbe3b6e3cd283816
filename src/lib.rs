//! kato_gpu: exact similarity matching of one state against millions of learned patterns.
//!
//! The core (everything outside `python` and `cuda`) is plain Rust and knows nothing of Python
//! or CUDA:
//! - `metrics`: the `difflib` and `lcs` metrics and the similarity formula;
//! - `ordering`: the result order;
//! - `store`: the columnar pattern store;
//! - `matcher`: the tiered matcher that scans the store on all cores;
//! - `device`: what the matcher needs from a device tier, and its failure policy;
//! - `sync`: promotion of the recent tier on its triggers;
//! - `vocabulary`: the symbol <-> id vocabulary and its crash-safe file store;
//! - `snapshot`: a matcher and its vocabulary saved to one checksummed file and loaded back.
//!
//! `cuda` implements the device tier. The modules are private: what the bindings, benches and
//! examples use is re-exported below, so code nothing uses shows up as dead.

// Reached only through the Python bindings (they attach a CUDA device tier to the matcher).
#[cfg_attr(not(feature = "python"), allow(dead_code))]
mod cuda;
mod device;
mod error;
mod fork;
mod kato_filters;
mod kato_record;
mod kpi;
mod matcher;
mod metrics;
mod name_index;
mod ordering;
mod parallel;
mod prediction;
mod snapshot;
mod store;
mod sync;
mod vocabulary;

#[cfg(test)]
mod testing;

#[cfg(feature = "python")]
mod python;

pub use device::{CapacityInfo, DeviceError, DeviceStatus};
pub use error::{KatoError, Result};
pub use kato_filters::{candidate_slots, FilterQuery, Pipeline, Rule, Stage};
pub use kato_record::{
    first_symbol_slots, kato_scores, pre_potential_bound, ranked_predictions, ranked_predictions_among,
    single_symbol_predictions, KatoScores, Ranked, RankedRecord, SingleSymbolRecord,
};
pub use kpi::{HistogramSnapshot, Kpis, DURATION_BUCKETS};
pub use matcher::{query_from_lookup, CandidateNames, Logging, Matcher, PromotionPlan, SharedMatcher, TierCounts};
pub use metrics::Metric;
pub use ordering::{compare_named, merge_ranked, Matches, NotRanked};
pub use prediction::{prediction_parts_many, PredictionParts, Weights};
pub use snapshot::{load as load_snapshot, save as save_snapshot, SnapshotInfo};
pub use store::MAX_SYMBOL_ID;
pub use sync::{duration_from_secs, unix_time, SyncManager, SyncSettings, SyncStats};
pub use vocabulary::{FileStore, Vocabulary, VocabularyDocument};
