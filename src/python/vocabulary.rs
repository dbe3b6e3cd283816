//! `kato_gpu._native.SymbolVocabularyEncoder`: the vocabulary (`crate::vocabulary`) and the store
//! it persists to, shared with every matcher built on it.
//!
//! Lock rules (no lock-order deadlock with Python threads):
//! - `learn` serialises every change (learns, clears, flushes). It is only ever taken with the
//!   GIL released, and it may be held while the GIL is taken again (a collection store is a
//!   Python object);
//! - the vocabulary's `RwLock` is never held while taking the GIL, so a thread that holds the
//!   GIL may take it for reading (a short lookup) without releasing the GIL first.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use numpy::PyArray1;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::error::guard;
use super::lifecycle::{self, unlocked};
use crate::matcher::Matcher;
use crate::vocabulary::{FileStore, Vocabulary, VocabularyDocument};

/// Id of padding in encoded arrays; never assigned to a symbol.
pub const PADDING_ID: i64 = -1;

/// Value of the `class` field that identifies the vocabulary document.
pub const VOCABULARY_CLASS: &str = "gpu_vocabulary";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Store {
    Memory,
    /// `None` once closed: the lock is released and writes are refused.
    File(Mutex<Option<FileStore>>),
    /// `kato_gpu._stores.CollectionStore` around a MongoDB-style collection.
    Collection(Py<PyAny>),
}

/// The vocabulary, its store, and what depends on its ids.
pub struct SharedVocabulary {
    vocab: RwLock<Vocabulary>,
    /// Serialises changes; see the module documentation.
    learn: Mutex<()>,
    store: Store,
    description: String,
    /// Matchers holding patterns encoded with these ids (see `clear`).
    users: Mutex<Vec<Weak<RwLock<Matcher>>>>,
    /// The Python `str` of each id, made once, for building result lists. Only touched with the
    /// GIL held; cut back whenever ids are forgotten.
    py_symbols: Mutex<PyStrings>,
}

impl SharedVocabulary {
    pub fn read(&self) -> RwLockReadGuard<'_, Vocabulary> {
        self.vocab.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vocabulary> {
        self.vocab.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a matcher whose patterns use these ids.
    pub fn add_user(&self, matcher: &Arc<RwLock<Matcher>>) {
        let mut users = lock(&self.users);
        users.retain(|w| w.strong_count() > 0);
        users.push(Arc::downgrade(matcher));
    }

    /// One learn, all or nothing: with every other change held off, `check` runs first (the
    /// caller's validation, e.g. that the names are new; `Ok(false)` stops with `Ok(None)`), then
    /// the unseen `symbols` get ids and are persisted (one store write), then `apply` gets the ids
    /// of `symbols`. A failed check or write changes nothing. Call with the GIL released.
    pub fn learn<T>(
        &self,
        symbols: &[&str],
        check: impl FnOnce() -> PyResult<bool>,
        apply: impl FnOnce(&[u32]) -> PyResult<T>,
    ) -> PyResult<Option<T>> {
        let _learning = lock(&self.learn);
        if !check()? {
            return Ok(None);
        }
        let (first, added) = {
            let mut vocab = self.write();
            let new = vocab.unseen(symbols.iter().copied());
            (vocab.push_all(&new)?, new.len())
        };
        if added > 0 {
            if let Err(err) = self.persist_new(first) {
                self.forget_from(first);
                return Err(err);
            }
            log::debug!("added {added} symbols (ids {first}..{})", first as usize + added);
        }
        let ids: Vec<u32> = {
            let vocab = self.read();
            symbols.iter().map(|s| vocab.id(s).expect("every symbol was just interned")).collect()
        };
        apply(&ids).map(Some)
    }

    /// Takes the learn lock for a change that assigns no ids (a bulk load of ids), so it cannot
    /// interleave with a clear. Call with the GIL released.
    pub fn hold<T>(&self, f: impl FnOnce(&Vocabulary) -> PyResult<T>) -> PyResult<T> {
        let _learning = lock(&self.learn);
        f(&self.read())
    }

    /// Takes `vocab` (a loaded snapshot's) as this vocabulary, which must be empty and in
    /// memory only (a stored vocabulary would disagree with its store). Call with the GIL
    /// released.
    pub fn restore(&self, vocab: Vocabulary) -> PyResult<()> {
        let _learning = lock(&self.learn);
        if !matches!(self.store, Store::Memory) || !self.read().is_empty() {
            return Err(PyValueError::new_err("a snapshot can only be restored into an empty in-memory encoder"));
        }
        *self.write() = vocab;
        lock(&self.py_symbols).forget_from(0);
        Ok(())
    }

    fn forget_from(&self, first: u32) {
        self.write().truncate(first);
        lock(&self.py_symbols).forget_from(first);
    }

    /// Writes the symbols with ids `first..` (just added) to the store.
    fn persist_new(&self, first: u32) -> PyResult<()> {
        match &self.store {
            Store::Memory => Ok(()),
            Store::File(file) => Ok(open_file(&mut lock(file))?.append(&self.read(), first)?),
            Store::Collection(adapter) => {
                let (symbols, size, next) = {
                    let vocab = self.read();
                    let symbols: Vec<String> =
                        (first..vocab.next_id()).filter_map(|id| vocab.symbol(id).map(str::to_owned)).collect();
                    (symbols, vocab.len(), vocab.next_id())
                };
                lifecycle::with_gil(|py| {
                    let done: bool = adapter.call_method1(py, "append", (symbols, first, size, next))?.extract(py)?;
                    if done {
                        Ok(())
                    } else {
                        self.replace_collection(py, adapter)
                    }
                })
            }
        }
    }

    /// Writes the whole vocabulary to a collection store (with the GIL held).
    fn replace_collection(&self, py: Python<'_>, adapter: &Py<PyAny>) -> PyResult<()> {
        let document = document_dict(py, &self.read().document())?;
        adapter.call_method1(py, "replace", (document,))?;
        Ok(())
    }

    /// Writes the whole vocabulary to the store now. Call with the GIL released.
    fn flush(&self) -> PyResult<()> {
        let _learning = lock(&self.learn);
        match &self.store {
            Store::Memory => Ok(()),
            Store::File(file) => Ok(open_file(&mut lock(file))?.rewrite(&self.read())?),
            Store::Collection(adapter) => lifecycle::with_gil(|py| self.replace_collection(py, adapter)),
        }
    }

    /// Empties the vocabulary and its store. Refused while a matcher holds patterns encoded with
    /// these ids: their ids would come to name other symbols. Call with the GIL released.
    fn clear(&self) -> PyResult<()> {
        let _learning = lock(&self.learn);
        let holding: usize = lock(&self.users)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|m| m.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        if holding > 0 {
            return Err(PyValueError::new_err(format!(
                "cannot clear the vocabulary: matchers built on it hold {holding} patterns encoded with its ids; \
                 call clear_all() on them first"
            )));
        }
        let empty = Vocabulary::new();
        match &self.store {
            Store::Memory => {}
            Store::File(file) => open_file(&mut lock(file))?.rewrite(&empty)?,
            Store::Collection(adapter) => lifecycle::with_gil(|py| -> PyResult<()> {
                adapter.call_method1(py, "replace", (document_dict(py, &empty.document())?,))?;
                Ok(())
            })?,
        }
        self.forget_from(0);
        self.write().clear();
        Ok(())
    }

    /// The Python `str` of each id in `ids` (each id must be known).
    pub fn py_symbols<'py>(&self, py: Python<'py>, ids: &[u32]) -> Vec<Bound<'py, PyString>> {
        let vocab = self.read();
        let mut cache = lock(&self.py_symbols);
        ids.iter().map(|&id| cache.get(py, &vocab, id)).collect()
    }
}

/// The Python `str` of each id, made once. Dense ids (the normal case) sit in a vector indexed
/// by id; ids far beyond the vocabulary's size (a loaded document with gaps) in a map, so a
/// sparse id space costs no memory.
#[derive(Default)]
struct PyStrings {
    dense: Vec<Option<Py<PyString>>>,
    sparse: std::collections::HashMap<u32, Py<PyString>>,
}

impl PyStrings {
    fn get<'py>(&mut self, py: Python<'py>, vocab: &Vocabulary, id: u32) -> Bound<'py, PyString> {
        let make = || PyString::new(py, vocab.symbol(id).unwrap_or_default()).unbind();
        let dense_limit = 2 * vocab.len() + 1024;
        let slot = if (id as usize) < dense_limit {
            if self.dense.len() <= id as usize {
                self.dense.resize_with((id as usize + 1).max(self.dense.len() * 5 / 4), || None);
            }
            self.dense[id as usize].get_or_insert_with(make)
        } else {
            self.sparse.entry(id).or_insert_with(make)
        };
        slot.bind(py).clone()
    }

    /// Forgets every id >= `first` (they may come to name other symbols).
    fn forget_from(&mut self, first: u32) {
        self.dense.truncate(first as usize);
        self.sparse.retain(|&id, _| id < first);
    }
}

/// The open file store, or an error once it was closed.
fn open_file(file: &mut Option<FileStore>) -> PyResult<&mut FileStore> {
    file.as_mut().ok_or_else(|| {
        PyValueError::new_err(
            "the vocabulary file was closed (SymbolVocabularyEncoder.close()); open it again to learn",
        )
    })
}

/// The stored document as the Python dict KATO's layout describes.
fn document_dict<'py>(py: Python<'py>, doc: &VocabularyDocument) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let s2i = PyDict::new(py);
    for (symbol, id) in &doc.symbol_to_id {
        s2i.set_item(symbol, id)?;
    }
    let i2s = PyDict::new(py);
    for (id, symbol) in &doc.id_to_symbol {
        i2s.set_item(id, symbol)?;
    }
    d.set_item("symbol_to_id", s2i)?;
    d.set_item("id_to_symbol", i2s)?;
    d.set_item("vocab_size", doc.vocab_size)?;
    d.set_item("next_id", doc.next_id)?;
    Ok(d)
}

/// Reads a stored document (a Mapping) into the core's form; the core validates it.
fn parse_document(doc: &Bound<'_, PyAny>, source: &str) -> PyResult<VocabularyDocument> {
    let corrupt = |what: String| PyValueError::new_err(format!("corrupt vocabulary in {source}: {what}"));
    let field = |name: &str| -> PyResult<Bound<'_, PyAny>> {
        doc.get_item(name).map_err(|_| corrupt(format!("missing field {name:?}")))
    };
    let int = |value: &Bound<'_, PyAny>, what: &str| -> PyResult<i64> {
        if value.is_instance_of::<pyo3::types::PyBool>() {
            return Err(corrupt(format!("{what} must be an int, got bool")));
        }
        value.extract::<i64>().map_err(|_| corrupt(format!("{what} must be an int, got {}", describe(value))))
    };
    let next_id = int(&field("next_id")?, "next_id")?;
    let mapping = |name: &str| -> PyResult<Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)>> {
        let value = field(name)?;
        let items = value.call_method0("items").map_err(|_| corrupt(format!("{name} must be a mapping")))?;
        items.try_iter()?.map(|item| item?.extract()).collect()
    };
    let mut symbol_to_id = Vec::new();
    for (symbol, id) in mapping("symbol_to_id")? {
        let symbol = symbol
            .extract::<String>()
            .map_err(|_| corrupt(format!("symbol_to_id key {} is not str", describe(&symbol))))?;
        let id = int(&id, &format!("symbol_to_id[{symbol:?}]"))?;
        symbol_to_id.push((symbol, id));
    }
    let mut id_to_symbol = Vec::new();
    for (key, symbol) in mapping("id_to_symbol")? {
        let key = if key.is_instance_of::<PyString>() {
            key.extract::<String>()?
        } else if !key.is_instance_of::<pyo3::types::PyBool>() && key.extract::<i64>().is_ok_and(|k| k >= 0) {
            key.extract::<i64>()?.to_string()
        } else {
            return Err(corrupt(format!("id_to_symbol key {} is not a non-negative integer", describe(&key))));
        };
        let symbol = symbol
            .extract::<String>()
            .map_err(|_| corrupt(format!("id_to_symbol[{key:?}] must be str, got {}", describe(&symbol))))?;
        id_to_symbol.push((key, symbol));
    }
    let vocab_size = match doc.get_item("vocab_size") {
        Ok(v) if !v.is_none() => Some(int(&v, "vocab_size")?),
        _ => None,
    };
    Ok(VocabularyDocument { symbol_to_id, id_to_symbol, vocab_size, next_id })
}

/// `type (repr)` of a value for error messages, the repr cut short.
pub fn describe(value: &Bound<'_, PyAny>) -> String {
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    let mut text = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "?".into());
    if text.chars().count() > 60 {
        text = text.chars().take(57).collect::<String>() + "...";
    }
    format!("{type_name} ({text})")
}

/// One symbol: a `str` (subclasses such as `numpy.str_` are taken as plain `str`) that is valid
/// Unicode (no lone surrogates, which no store can write).
pub fn symbol_of(value: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<String> {
    let text = value
        .downcast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{} must be str, got {}", what(), describe(value))))?;
    match text.to_cow() {
        Ok(text) => Ok(text.into_owned()),
        Err(_) => Err(PyValueError::new_err(format!(
            "{} is not valid Unicode (it contains a lone surrogate): {}",
            what(),
            describe(value)
        ))),
    }
}

/// A sequence of `str` symbols, checked whole before anything changes. A bare `str` is refused:
/// `encode_sequence("abc")` is almost always a bug, not three one-letter symbols.
pub fn symbols_of(items: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if is_text(items) {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a sequence of str symbols, got {}; wrap a single symbol in a list",
            items.get_type().name()?
        )));
    }
    let iterator = items.try_iter().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a sequence of str symbols, got {}", describe(items)))
    })?;
    iterator.enumerate().map(|(position, item)| symbol_of(&item?, &|| format!("{what}[{position}]"))).collect()
}

/// Borrowed `&str`s of owned symbols.
pub fn strs(symbols: &[String]) -> Vec<&str> {
    symbols.iter().map(String::as_str).collect()
}

/// `str`, `bytes` and friends: iterable, but never a sequence of symbols or events.
pub fn is_text(value: &Bound<'_, PyAny>) -> bool {
    value.is_instance_of::<PyString>()
        || value.is_instance_of::<pyo3::types::PyBytes>()
        || value.is_instance_of::<pyo3::types::PyByteArray>()
        || value.is_instance_of::<pyo3::types::PyMemoryView>()
}

/// A pattern: a sequence of events, each a sequence of `str` symbols.
pub fn events_of(items: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<String>>> {
    let bad =
        || PyTypeError::new_err(format!("{what} must be a sequence of events (lists of str), got {}", describe(items)));
    if is_text(items) {
        return Err(bad());
    }
    let iterator = items.try_iter().map_err(|_| bad())?;
    iterator.enumerate().map(|(k, event)| symbols_of(&event?, &format!("{what}[{k}]"))).collect()
}

#[pyclass(module = "kato_gpu._native", name = "SymbolVocabularyEncoder", subclass, frozen)]
pub struct PyVocabulary {
    pub(crate) shared: Arc<SharedVocabulary>,
}

#[pymethods]
impl PyVocabulary {
    /// `store`: `None` (memory only), a path (`str` or `os.PathLike`) to a vocabulary file, or a
    /// MongoDB-style collection (`find_one`/`update_one`).
    #[new]
    #[pyo3(signature = (store = None))]
    fn new(py: Python<'_>, store: Option<Bound<'_, PyAny>>) -> PyResult<Self> {
        let (store, vocab, description) = match store {
            None => (Store::Memory, Vocabulary::new(), "memory".to_string()),
            Some(s) if s.is_instance_of::<PyString>() || s.hasattr("__fspath__")? => {
                let path = py.import("os")?.call_method1("fspath", (&s,))?;
                let path: PathBuf = path.extract::<String>().map(PathBuf::from).map_err(|_| {
                    PyTypeError::new_err(format!("store path must be str or os.PathLike[str], got {}", describe(&s)))
                })?;
                let (file, vocab) = unlocked(py, || guard(|| FileStore::open(&path)))??;
                (Store::File(Mutex::new(Some(file))), vocab, format!("file {}", path.display()))
            }
            Some(s) if callable(&s, "find_one") && callable(&s, "update_one") => {
                let adapter = py.import("kato_gpu._stores")?.getattr("CollectionStore")?.call1((&s,))?;
                let description: String = adapter.getattr("description")?.extract()?;
                let vocab = match adapter.call_method0("load")? {
                    doc if doc.is_none() => Vocabulary::new(),
                    doc => parse_document(&doc, &description)?.into_vocabulary(&description)?,
                };
                (Store::Collection(adapter.unbind()), vocab, description)
            }
            Some(s) => {
                return Err(PyTypeError::new_err(format!(
                    "store must be None, a collection with find_one/update_one, or a str/os.PathLike path to a \
                     vocabulary file; got {}",
                    describe(&s)
                )))
            }
        };
        if vocab.is_empty() {
            log::info!("no stored vocabulary in {description}; starting empty");
        } else {
            log::info!("loaded vocabulary of {} symbols from {description}", vocab.len());
        }
        let shared = SharedVocabulary {
            vocab: RwLock::new(vocab),
            learn: Mutex::new(()),
            store,
            description,
            users: Mutex::new(Vec::new()),
            py_symbols: Mutex::new(PyStrings::default()),
        };
        Ok(PyVocabulary { shared: Arc::new(shared) })
    }

    /// Takes the vocabulary of a snapshot (`HybridGPUMatcher.load`); this encoder must be
    /// empty and in memory only.
    fn _restore_snapshot(&self, py: Python<'_>, snapshot: &Bound<'_, super::snapshot::PySnapshot>) -> PyResult<()> {
        let vocab = snapshot.get().take_vocabulary()?;
        unlocked(py, || guard(|| self.shared.restore(vocab)))?
    }

    /// Number of symbols in the vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.shared.read().len()
    }

    /// The id the next new symbol gets.
    #[getter]
    fn next_id(&self) -> u32 {
        self.shared.read().next_id()
    }

    /// symbol -> id, a read-only live view (a `collections.abc.Mapping`).
    #[getter]
    fn symbol_to_id(&self) -> SymbolToId {
        SymbolToId { shared: self.shared.clone() }
    }

    /// id -> symbol, a read-only live view (a `collections.abc.Mapping`).
    #[getter]
    fn id_to_symbol(&self) -> IdToSymbol {
        IdToSymbol { shared: self.shared.clone() }
    }

    /// The id of `symbol`, adding it (one store write) if new.
    fn encode_symbol(&self, py: Python<'_>, symbol: Bound<'_, PyAny>) -> PyResult<u32> {
        let text = symbol_of(&symbol, &|| "symbol".to_string())?;
        let ids = self.encode(py, &[text.as_str()])?;
        Ok(ids[0])
    }

    /// Ids of `symbols` as a list of ints, adding unseen ones (one store write).
    fn encode_ids(&self, py: Python<'_>, symbols: Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
        let symbols = symbols_of(&symbols, "symbols")?;
        self.encode(py, &strs(&symbols))
    }

    /// Ids of `sequence` as an int32 array, adding unseen symbols (one store write).
    fn encode_sequence<'py>(
        &self,
        py: Python<'py>,
        sequence: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i32>>> {
        let symbols = symbols_of(&sequence, "sequence")?;
        let ids = self.encode(py, &strs(&symbols))?;
        Ok(PyArray1::from_iter(py, ids.into_iter().map(|id| id as i32)))
    }

    /// One int32 array per event, adding every unseen symbol of the pattern in one store write.
    fn encode_pattern<'py>(
        &self,
        py: Python<'py>,
        pattern_data: Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyArray1<i32>>>> {
        let events = events_of(&pattern_data, "pattern_data")?;
        let flat: Vec<&str> = events.iter().flat_map(|e| strs(e)).collect();
        let ids = self.encode(py, &flat)?;
        let mut rest = ids.as_slice();
        Ok(events
            .iter()
            .map(|event| {
                let (head, tail) = rest.split_at(event.len());
                rest = tail;
                PyArray1::from_iter(py, head.iter().map(|&id| id as i32))
            })
            .collect())
    }

    /// Ids of `symbols` for a query: unknown symbols give -1. Never adds or writes anything.
    fn lookup_ids(&self, symbols: Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
        let symbols = symbols_of(&symbols, "symbols")?;
        let vocab = self.shared.read();
        Ok(strs(&symbols).iter().map(|s| vocab.id(s).map_or(PADDING_ID, i64::from)).collect())
    }

    /// The symbol of `symbol_id`, or None if the id is unknown.
    fn decode_symbol(&self, py: Python<'_>, symbol_id: Bound<'_, PyAny>) -> Option<Py<PyString>> {
        let id = symbol_id.extract::<i64>().ok()?;
        let id = u32::try_from(id).ok()?;
        self.shared.read().symbol(id)?;
        Some(self.shared.py_symbols(py, &[id]).pop()?.unbind())
    }

    /// Symbols of `encoded`, skipping padding (ids < 0) and unknown ids. Unlike KATO's, the empty
    /// symbol is kept.
    fn decode_sequence<'py>(&self, py: Python<'py>, encoded: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let ids = known_ids(&self.shared, &encoded)?;
        PyList::new(py, self.shared.py_symbols(py, &ids))
    }

    /// One list of symbols per encoded event.
    fn decode_pattern<'py>(&self, py: Python<'py>, encoded_pattern: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for event in encoded_pattern.try_iter()? {
            out.append(self.decode_sequence(py, event?)?)?;
        }
        Ok(out)
    }

    /// Empties the vocabulary and its store. Raises ValueError while a matcher built on this
    /// vocabulary holds patterns (their ids would be reused for other symbols).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        unlocked(py, || guard(|| self.shared.clear()))??;
        log::info!("vocabulary cleared");
        Ok(())
    }

    /// Writes the whole vocabulary to the store now (no-op in memory). File stores compact their
    /// log into the snapshot.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        unlocked(py, || guard(|| self.shared.flush()))?
    }

    /// Releases the store: a file store's lock is dropped, so another encoder (in this or
    /// another process) may open the file. The vocabulary stays readable; adding a symbol
    /// afterwards raises ValueError. No-op for other stores and when already closed.
    fn close(&self, py: Python<'_>) {
        unlocked(py, || {
            let _learning = lock(&self.shared.learn);
            if let Store::File(file) = &self.shared.store {
                lock(file).take();
            }
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py)
    }

    /// `vocab_size`, `next_id` and `memory_usage_bytes` (the Rust side's own estimate).
    fn get_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let vocab = self.shared.read();
        let d = PyDict::new(py);
        d.set_item("vocab_size", vocab.len())?;
        d.set_item("next_id", vocab.next_id())?;
        d.set_item("memory_usage_bytes", vocab.memory_bytes())?;
        d.set_item("store", &self.shared.description)?;
        Ok(d)
    }

    /// Where the vocabulary is stored: "memory", "file <path>" or "collection <name>".
    #[getter]
    fn store_description(&self) -> &str {
        &self.shared.description
    }

    fn __repr__(&self) -> String {
        format!("SymbolVocabularyEncoder(vocab_size={})", self.shared.read().len())
    }
}

impl PyVocabulary {
    fn encode(&self, py: Python<'_>, symbols: &[&str]) -> PyResult<Vec<u32>> {
        let ids = unlocked(py, || guard(|| self.shared.learn(symbols, || Ok(true), |ids| Ok(ids.to_vec()))))??;
        Ok(ids.unwrap_or_default())
    }
}

fn callable(value: &Bound<'_, PyAny>, name: &str) -> bool {
    value.getattr(name).is_ok_and(|a| a.is_callable())
}

/// The known ids of an iterable of ints (numpy arrays included), padding and unknown ids skipped.
fn known_ids(shared: &SharedVocabulary, encoded: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    let mut raw = Vec::new();
    for item in encoded.try_iter()? {
        let item = item?;
        let id: i64 = item
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("encoded ids must be integers, got {}", describe(&item))))?;
        raw.push(id);
    }
    let vocab = shared.read();
    Ok(raw.into_iter().filter_map(|id| u32::try_from(id).ok()).filter(|&id| vocab.symbol(id).is_some()).collect())
}

/// `encoder.symbol_to_id`: symbol -> id, read-only and live.
#[pyclass(module = "kato_gpu._native", name = "SymbolToId", frozen, mapping)]
pub struct SymbolToId {
    shared: Arc<SharedVocabulary>,
}

#[pymethods]
impl SymbolToId {
    fn __len__(&self) -> usize {
        self.shared.read().len()
    }

    fn __getitem__(&self, symbol: Bound<'_, PyAny>) -> PyResult<u32> {
        self.get(symbol.clone(), None)?.ok_or_else(|| PyKeyError::new_err(symbol.unbind()))
    }

    fn __contains__(&self, symbol: Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.get(symbol, None)?.is_some())
    }

    #[pyo3(signature = (symbol, default = None))]
    fn get(&self, symbol: Bound<'_, PyAny>, default: Option<u32>) -> PyResult<Option<u32>> {
        let Ok(text) = symbol.downcast::<PyString>() else { return Ok(default) };
        let Ok(text) = text.to_cow() else { return Ok(default) };
        Ok(self.shared.read().id(&text).or(default))
    }

    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ids: Vec<u32> = self.shared.read().iter().map(|(id, _)| id).collect();
        PyList::new(py, self.shared.py_symbols(py, &ids))
    }

    fn values(&self) -> Vec<u32> {
        self.shared.read().iter().map(|(id, _)| id).collect()
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ids: Vec<u32> = self.shared.read().iter().map(|(id, _)| id).collect();
        let symbols = self.shared.py_symbols(py, &ids);
        PyList::new(py, symbols.into_iter().zip(ids))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.try_iter().map(Bound::into_any)
    }

    fn __eq__(&self, py: Python<'_>, other: Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = PyDict::from_sequence(self.items(py)?.as_any())?;
        mine.eq(other)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(PyDict::from_sequence(self.items(py)?.as_any())?.repr()?.to_string())
    }
}

/// `encoder.id_to_symbol`: id -> symbol, read-only and live.
#[pyclass(module = "kato_gpu._native", name = "IdToSymbol", frozen, mapping)]
pub struct IdToSymbol {
    shared: Arc<SharedVocabulary>,
}

impl IdToSymbol {
    fn id_of(key: &Bound<'_, PyAny>) -> Option<u32> {
        if key.is_instance_of::<pyo3::types::PyBool>() || key.is_instance_of::<pyo3::types::PyFloat>() {
            return None;
        }
        key.extract::<i64>().ok().and_then(|id| u32::try_from(id).ok())
    }
}

#[pymethods]
impl IdToSymbol {
    fn __len__(&self) -> usize {
        self.shared.read().len()
    }

    fn __getitem__(&self, py: Python<'_>, key: Bound<'_, PyAny>) -> PyResult<Py<PyString>> {
        self.get(py, key.clone(), None)?
            .and_then(|s| s.downcast_bound::<PyString>(py).ok().map(|s| s.clone().unbind()))
            .ok_or_else(|| PyKeyError::new_err(key.unbind()))
    }

    fn __contains__(&self, key: Bound<'_, PyAny>) -> bool {
        Self::id_of(&key).is_some_and(|id| self.shared.read().symbol(id).is_some())
    }

    #[pyo3(signature = (key, default = None))]
    fn get(&self, py: Python<'_>, key: Bound<'_, PyAny>, default: Option<PyObject>) -> PyResult<Option<PyObject>> {
        match Self::id_of(&key).filter(|&id| self.shared.read().symbol(id).is_some()) {
            Some(id) => Ok(self.shared.py_symbols(py, &[id]).pop().map(|s| s.into_any().unbind())),
            None => Ok(default),
        }
    }

    fn keys(&self) -> Vec<u32> {
        self.shared.read().iter().map(|(id, _)| id).collect()
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ids = self.keys();
        PyList::new(py, self.shared.py_symbols(py, &ids))
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let ids = self.keys();
        let symbols = self.shared.py_symbols(py, &ids);
        PyList::new(py, ids.into_iter().zip(symbols))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.keys())?.try_iter().map(Bound::into_any)
    }

    fn __eq__(&self, py: Python<'_>, other: Bound<'_, PyAny>) -> PyResult<bool> {
        PyDict::from_sequence(self.items(py)?.as_any())?.eq(other)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(PyDict::from_sequence(self.items(py)?.as_any())?.repr()?.to_string())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVocabulary>()?;
    m.add_class::<SymbolToId>()?;
    m.add_class::<IdToSymbol>()?;
    m.add("PADDING_ID", PADDING_ID)?;
    m.add("VOCABULARY_CLASS", VOCABULARY_CLASS)
}
