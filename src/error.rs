//! Errors of the pure-Rust core. The Python bindings map every variant to a Python exception
//! (see `python/error.rs`); nothing here knows about Python.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum KatoError {
    #[error("threshold must be a number in [0.0, 1.0], got {0}")]
    InvalidThreshold(f64),

    #[error("unknown metric {0:?}: expected \"difflib\" or \"lcs\"")]
    UnknownMetric(String),

    #[error("pattern name must be a non-empty string")]
    EmptyName,

    #[error("pattern name {0:?} appears more than once in the batch")]
    DuplicateInBatch(String),

    #[error("pattern {0:?} is already stored")]
    AlreadyStored(String),

    #[error("invalid pattern layout: {0}")]
    InvalidLayout(String),

    #[error("symbol id {0} is out of range: pattern symbol ids must lie in [0, {max}]", max = crate::store::MAX_SYMBOL_ID)]
    SymbolIdOutOfRange(i64),

    #[error("the GPU tier failed and fallback_to_cpu is off: {0}")]
    DeviceLost(String),

    #[error("KATO's rounded similarity reproduces its RapidFuzz token path and needs the lcs metric, not {0}")]
    KatoRoundingNeedsLcs(&'static str),

    #[error("no text for symbol id {0}: the fuzzy token path needs the text of every pattern symbol")]
    MissingSymbolText(u32),

    #[error("the store is full: at most {0} patterns and {1} symbols in all")]
    CapacityExceeded(u64, u64),

    /// A stored vocabulary that does not round-trip; the text names the store and the problem.
    #[error("corrupt vocabulary in {0}")]
    CorruptVocabulary(String),

    #[error("vocabulary store {0} is in use: another open store holds its lock (in this or another process)")]
    StoreLocked(String),

    /// The text names the file, the operation and the OS error.
    #[error("vocabulary store I/O error: {0}")]
    StoreIo(String),

    /// The caller persisted ids out of order (a push not persisted, or persisted twice).
    #[error("vocabulary store out of sync with the vocabulary: {0}")]
    StoreOutOfSync(String),

    #[error(
        "the vocabulary is full: adding {adding} symbols from id {next_id} would pass the largest symbol id {max}",
        max = crate::store::MAX_SYMBOL_ID
    )]
    VocabularyFull { next_id: u64, adding: usize },

    #[error("invalid value: {0}")]
    InvalidValue(String),

    #[error("pattern of {len} symbols is longer than max_pattern_length = {max}")]
    PatternTooLong { len: usize, max: usize },

    /// A snapshot file that cannot be loaded; the text names the file and the problem.
    #[error("invalid snapshot {0}")]
    InvalidSnapshot(String),

    /// The text names the file, the operation and the OS error.
    #[error("snapshot I/O error: {0}")]
    SnapshotIo(String),

    #[error("state of {len} symbols is longer than max_pattern_length = {max}")]
    StateTooLong { len: usize, max: usize },
}

pub type Result<T> = std::result::Result<T, KatoError>;
