//! A vocabulary file that costs O(new symbols) per learn and survives a crash at any point.
//!
//! Three files, all beside the snapshot's resolved path `P` (after following symlinks):
//! - `P`, the snapshot: the JSON document of [`super::document`], replaced only atomically (temp file, fsync,
//!   rename, fsync of the directory). A snapshot written by the old Python store loads unchanged.
//! - `P.log`, the log of symbols learned since: a header line naming the snapshot it extends
//!   (`{"snapshot_bytes":N,"snapshot_hash":"<16 hex>"}`), then per append a batch line (`{"batch":2}`) and one line
//!   per symbol (`{"id":17,"symbol":"x"}`), ids consecutive from the snapshot's `next_id`. Each append is one write
//!   then one fdatasync; an append a crash cut short (even at a line boundary) is dropped whole on open.
//! - `P.lock`, locked exclusively (`flock`) for the store's whole life, so two stores never hand out the same ids.
//!
//! The rename of a new snapshot is the only commit point of a rewrite: a log whose header names another snapshot is
//! left over from a rewrite that crashed before emptying it, and is discarded on open. Without the header a crash
//! right after `clear()`'s rename would replay the old log onto the empty snapshot and bring symbols back.
//! The log is compacted into a new snapshot once it holds more lines than `max(4096, symbols in the snapshot)`:
//! each compaction at least doubles the snapshot, so its cost, spread over the lines that caused it, is O(1) each.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::document::{to_ascii_json, DocumentOf, StoredDocument};
use super::Vocabulary;
use crate::error::{KatoError, Result};

/// The log is compacted only past this many lines, so that small vocabularies are not rewritten often.
const MIN_COMPACTION_LINES: usize = 4096;

/// Symlinks followed before giving up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Identifies a snapshot's exact bytes, for the log header: the length and a 64-bit FNV-1a-style hash over
/// little-endian words (fast enough to run over every snapshot read or written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    bytes: u64,
    hash: u64,
}

impl Fingerprint {
    fn of(data: &[u8]) -> Fingerprint {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let step = |hash: u64, word: [u8; 8]| (hash ^ u64::from_le_bytes(word)).wrapping_mul(PRIME).rotate_left(23);
        let mut chunks = data.chunks_exact(8);
        let mut hash = (&mut chunks).fold(0xcbf2_9ce4_8422_2325, |h, c| step(h, c.try_into().expect("8 bytes")));
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        hash = step(hash, tail);
        Fingerprint { bytes: data.len() as u64, hash }
    }

    /// A snapshot file that does not exist.
    fn missing() -> Fingerprint {
        Fingerprint::of(&[])
    }
}

#[derive(Serialize)]
struct LogEntry<'a> {
    id: u32,
    symbol: &'a str,
}

/// Opens one append: the `count` symbol lines that follow. A batch cut short by a crash is dropped whole on open, so
/// an append persists all of its symbols or none.
#[derive(Serialize)]
struct LogBatch {
    batch: u64,
}

#[derive(Serialize)]
struct LogHeader {
    snapshot_bytes: u64,
    snapshot_hash: String,
}

/// Any line of the log; which it is follows from the fields present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLine {
    id: Option<u64>,
    symbol: Option<String>,
    batch: Option<u64>,
    snapshot_bytes: Option<u64>,
    snapshot_hash: Option<String>,
}

fn io_error(path: &Path, doing: &str, err: io::Error) -> KatoError {
    KatoError::StoreIo(format!("{}: {doing}: {err}", path.display()))
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The file a write to `path` must replace: symlinks followed to the final target, which need not exist yet, in a
/// canonical directory (created if missing), so that every link to one file names the same lock and log.
fn resolve(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current).map_err(|e| io_error(&current, "reading the symlink", e))?;
                // A relative target is relative to the link's directory; join() keeps an absolute one as it is.
                current = current.parent().map_or(target.clone(), |dir| dir.join(&target));
            }
            Ok(_) => return in_canonical_dir(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return in_canonical_dir(current),
            Err(e) => return Err(io_error(&current, "reading file metadata", e)),
        }
    }
    Err(KatoError::StoreIo(format!("{}: more than {MAX_SYMLINKS} symbolic links to follow", path.display())))
}

fn in_canonical_dir(file: PathBuf) -> Result<PathBuf> {
    let Some(name) = file.file_name() else {
        return Err(KatoError::StoreIo(format!("{}: not a path to a file", file.display())));
    };
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating the directory", e))?;
    let dir = fs::canonicalize(dir).map_err(|e| io_error(dir, "resolving the directory", e))?;
    Ok(dir.join(name))
}

/// Makes renames and new files in `dir` durable. Failure is only logged: the callers' change is already visible,
/// and reporting an error would make them roll back memory while the file holds the new state; a crash before the
/// directory reaches the disk leaves the previous state, which is consistent too.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("could not fsync directory {}: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A vocabulary file: a snapshot plus an append-only log of new symbols beside it (see the module doc). Holds an
/// exclusive lock for its whole life, so a second `FileStore` on the same file, in this process or another, gets
/// `Err(KatoError::StoreLocked)` at once.
#[derive(Debug)]
pub struct FileStore {
    /// As given, for messages.
    path: PathBuf,
    /// The snapshot's resolved path.
    snapshot: PathBuf,
    log_path: PathBuf,
    log: File,
    /// Held only for its lock, released when the store is dropped.
    _lock: File,
    /// Bytes of the log known good and durable; the next append writes here.
    log_len: u64,
    /// Symbol lines in those bytes.
    log_lines: usize,
    /// The file may hold bytes past `log_len` (a failed write, or a stale log not yet emptied): cut them first.
    log_dirty: bool,
    snapshot_fingerprint: Fingerprint,
    snapshot_symbols: usize,
    /// The id after the last one persisted.
    next_id: u32,
    snapshot_writes: u64,
}

impl FileStore {
    /// Locks, loads the snapshot (missing file = empty vocabulary), replays the log and repairs it: a last line cut
    /// by a crash is dropped and the log truncated to the last good line; a log left over from a rewrite that crashed
    /// is discarded; a log line whose id is below the snapshot's `next_id` must name the same symbol as the snapshot
    /// and is skipped (the log is then compacted away). Any other inconsistency is `Err(CorruptVocabulary)`, so after
    /// a crash no id ever names two different symbols.
    pub fn open(path: &Path) -> Result<(FileStore, Vocabulary)> {
        let snapshot = resolve(path)?;
        let lock_path = beside(&snapshot, ".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, "opening the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(KatoError::StoreLocked(path.display().to_string())),
            Err(TryLockError::Error(e)) => return Err(io_error(&lock_path, "locking", e)),
        }

        let source = format!("file {}", path.display());
        let (vocab, snapshot_fingerprint) = match fs::read(&snapshot) {
            Ok(bytes) => {
                let document: StoredDocument = serde_json::from_slice(&bytes).map_err(|e| {
                    KatoError::CorruptVocabulary(format!("{source}: not a valid vocabulary document ({e})"))
                })?;
                (document.0.into_vocabulary(&source)?, Fingerprint::of(&bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vocabulary::new(), Fingerprint::missing()),
            Err(e) => return Err(io_error(&snapshot, "reading the snapshot", e)),
        };

        let log_path = beside(&snapshot, ".log");
        let log_existed = fs::symlink_metadata(&log_path).is_ok();
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(|e| io_error(&log_path, "opening the log", e))?;
        if !log_existed {
            sync_dir(snapshot.parent().expect("resolved paths have a directory"));
        }

        let mut store = FileStore {
            path: path.to_path_buf(),
            snapshot,
            log_path,
            log,
            _lock: lock,
            log_len: 0,
            log_lines: 0,
            log_dirty: false,
            snapshot_fingerprint,
            snapshot_symbols: vocab.len(),
            next_id: vocab.next_id(),
            snapshot_writes: 0,
        };
        let mut vocab = vocab;
        store.replay(&mut vocab)?;
        Ok((store, vocab))
    }

    fn replay(&mut self, vocab: &mut Vocabulary) -> Result<()> {
        let mut data = Vec::new();
        self.log.read_to_end(&mut data).map_err(|e| io_error(&self.log_path, "reading the log", e))?;
        let good_len = data.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        let source = format!("log {}", self.log_path.display());
        let corrupt =
            |line: usize, detail: String| KatoError::CorruptVocabulary(format!("{source}, line {line}: {detail}"));

        let mut headed = false;
        let mut stale = false;
        let mut entries = 0;
        let mut skipped = 0;
        // The batch being read: where its line starts, how many symbol lines it still expects, the vocabulary's
        // next id before it and how many of its lines were loaded.
        let mut batch: Option<(usize, u64, u32, usize)> = None;
        let mut offset = 0;
        let complete = data[..good_len].strip_suffix(b"\n");
        for (index, raw) in complete.into_iter().flat_map(|lines| lines.split(|&b| b == b'\n')).enumerate() {
            let number = index + 1;
            let line_start = offset;
            offset += raw.len() + 1;
            let line: LogLine =
                serde_json::from_slice(raw).map_err(|e| corrupt(number, format!("not a log line ({e})")))?;
            if line.id.is_some() {
                match batch.as_mut() {
                    Some((_, left, _, _)) if *left > 0 => *left -= 1,
                    _ => return Err(corrupt(number, "a symbol line outside a batch".to_string())),
                }
            }
            match line {
                LogLine { batch: Some(count), id: None, symbol: None, snapshot_bytes: None, snapshot_hash: None } => {
                    if batch.is_some_and(|(_, left, _, _)| left > 0) {
                        return Err(corrupt(number, "a batch before the previous one is complete".to_string()));
                    }
                    batch = Some((line_start, count, vocab.next_id(), 0));
                }
                LogLine {
                    id: None,
                    symbol: None,
                    batch: None,
                    snapshot_bytes: Some(bytes),
                    snapshot_hash: Some(hash),
                } => {
                    if index > 0 {
                        return Err(corrupt(number, "a header after the first line".to_string()));
                    }
                    headed = true;
                    let hash = u64::from_str_radix(&hash, 16)
                        .map_err(|_| corrupt(number, format!("snapshot_hash {hash:?} is not hexadecimal")))?;
                    if (Fingerprint { bytes, hash }) != self.snapshot_fingerprint {
                        stale = true;
                        break;
                    }
                }
                LogLine {
                    id: Some(id),
                    symbol: Some(symbol),
                    batch: None,
                    snapshot_bytes: None,
                    snapshot_hash: None,
                } => {
                    if id < u64::from(vocab.next_id()) {
                        match vocab.symbol(id as u32) {
                            Some(known) if known == symbol => {
                                skipped += 1;
                                continue;
                            }
                            known => {
                                return Err(corrupt(
                                    number,
                                    format!("id {id} is {symbol:?} here but {known:?} in the snapshot"),
                                ))
                            }
                        }
                    }
                    if id != u64::from(vocab.next_id()) {
                        return Err(corrupt(number, format!("id {id} where {} comes next", vocab.next_id())));
                    }
                    vocab.load_one(id as u32, &symbol).map_err(|detail| corrupt(number, detail))?;
                    entries += 1;
                    if let Some((_, _, _, loaded)) = batch.as_mut() {
                        *loaded += 1;
                    }
                }
                _ => return Err(corrupt(number, "neither a header nor a symbol line".to_string())),
            }
        }

        let mut good_len = good_len;
        if let Some((start, left, next_before, loaded)) = batch.filter(|&(_, left, _, _)| left > 0 && !stale) {
            log::warn!("{source}: dropped the last append, cut short by a crash ({left} of its symbols missing)");
            vocab.truncate(next_before);
            entries -= loaded;
            good_len = start;
        }
        if stale {
            log::warn!("{source}: extends an earlier snapshot (a rewrite was cut short); discarded");
            self.cut_log(0)?;
        } else if skipped > 0 || (entries > 0 && !headed) {
            // Lines the snapshot already holds, or no header to tie the log to it: a fresh snapshot settles both.
            log::warn!("{source}: {skipped} lines already in the snapshot; compacting");
            self.rewrite(vocab)?;
        } else {
            if good_len < data.len() {
                log::warn!("{source}: dropped a last line cut short ({} bytes)", data.len() - good_len);
            }
            self.cut_log(good_len as u64)?;
            self.log_lines = entries;
        }
        self.next_id = vocab.next_id();
        Ok(())
    }

    /// Truncates the log to `len` (durably) and makes it the good length.
    fn cut_log(&mut self, len: u64) -> Result<()> {
        self.log
            .set_len(len)
            .and_then(|()| self.log.sync_data())
            .map_err(|e| io_error(&self.log_path, "truncating the log", e))?;
        self.log_len = len;
        self.log_dirty = false;
        if len == 0 {
            self.log_lines = 0;
        }
        Ok(())
    }

    /// Persists the symbols with ids `first_id..vocab.next_id()` (just pushed): one write of their log lines, then
    /// fdatasync; or, when the log has grown past `max(4096, symbols in the snapshot)`, a compaction into a new
    /// snapshot instead. Amortised O(new symbols), whatever the vocabulary's size. On `Err` the caller rolls the
    /// vocabulary back; whatever reached the log is cut off again (or, if that fails too, before the next write), so
    /// no line survives for an id the caller forgot, except after a crash, when the log is all there is.
    pub fn append(&mut self, vocab: &Vocabulary, first_id: u32) -> Result<()> {
        let end = vocab.next_id();
        let missing = (first_id..end).find(|&id| vocab.symbol(id).is_none());
        if first_id != self.next_id || end < first_id || missing.is_some() {
            return Err(KatoError::StoreOutOfSync(format!(
                "{}: asked to persist ids {first_id}..{end}, but the file holds ids below {}{}; persist each push_all \
                 once, in order",
                self.path.display(),
                self.next_id,
                missing.map_or(String::new(), |id| format!(" and id {id} has no symbol")),
            )));
        }
        let count = (end - first_id) as usize;
        if count == 0 {
            return Ok(());
        }
        if self.log_lines + count > MIN_COMPACTION_LINES.max(self.snapshot_symbols) {
            return self.rewrite(vocab);
        }

        let mut lines = Vec::with_capacity(count * 32);
        if self.log_len == 0 {
            let header = LogHeader {
                snapshot_bytes: self.snapshot_fingerprint.bytes,
                snapshot_hash: format!("{:016x}", self.snapshot_fingerprint.hash),
            };
            to_ascii_json(&header, &mut lines);
            lines.push(b'\n');
        }
        to_ascii_json(&LogBatch { batch: count as u64 }, &mut lines);
        lines.push(b'\n');
        for id in first_id..end {
            to_ascii_json(&LogEntry { id, symbol: vocab.symbol(id).expect("checked above") }, &mut lines);
            lines.push(b'\n');
        }
        self.write_log(&lines)?;
        self.log_lines += count;
        self.next_id = end;
        Ok(())
    }

    fn write_log(&mut self, bytes: &[u8]) -> Result<()> {
        if self.log_dirty {
            self.cut_log(self.log_len)?;
        }
        let written = (&self.log)
            .seek(SeekFrom::Start(self.log_len))
            .and_then(|_| (&self.log).write_all(bytes))
            .and_then(|()| self.log.sync_data());
        if let Err(e) = written {
            self.log_dirty = true;
            if let Err(again) = self.cut_log(self.log_len) {
                log::warn!("{again} (retried before the next write)");
            }
            return Err(io_error(&self.log_path, "appending to the log", e));
        }
        self.log_len += bytes.len() as u64;
        Ok(())
    }

    /// Writes `vocab` as the new snapshot atomically and empties the log (used by clear() and compaction). On `Err`
    /// the file still holds the previous state.
    pub fn rewrite(&mut self, vocab: &Vocabulary) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.snapshot_fingerprint.bytes as usize + 64);
        to_ascii_json(&DocumentOf(vocab), &mut bytes);
        let fingerprint = Fingerprint::of(&bytes);
        let unchanged =
            fingerprint == self.snapshot_fingerprint && fs::read(&self.snapshot).is_ok_and(|old| old == bytes);
        if unchanged {
            // Emptying the log is then the whole change (and renaming an identical snapshot would leave the log's
            // header matching it, so a crash before the log is emptied would replay the log).
            self.cut_log(0)?;
        } else {
            self.replace_snapshot(&bytes)?;
            self.snapshot_fingerprint = fingerprint;
            // The log now names the old snapshot: a later open discards it even if this truncation never happens.
            self.log_len = 0;
            self.log_lines = 0;
            self.log_dirty = true;
            if let Err(e) = self.cut_log(0) {
                log::warn!("{e} (retried before the next write)");
            }
        }
        self.snapshot_symbols = vocab.len();
        self.next_id = vocab.next_id();
        Ok(())
    }

    fn replace_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);
        let dir = self.snapshot.parent().expect("resolved paths have a directory");
        let name = self.snapshot.file_name().expect("resolved paths name a file").to_string_lossy();
        let permissions = match fs::metadata(&self.snapshot) {
            Ok(meta) => Some(meta.permissions()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&self.snapshot, "reading file metadata", e)),
        };
        let (temp_path, mut temp) = loop {
            let serial = TEMP_SERIAL.fetch_add(1, Ordering::Relaxed);
            let temp_path = dir.join(format!(".{name}.{}.{serial}.tmp", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&temp_path) {
                Ok(file) => break (temp_path, file),
                // Left by a crashed process that had the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&temp_path, "creating a temporary snapshot", e)),
            }
        };
        let written = temp
            .write_all(bytes)
            .and_then(|()| temp.sync_all())
            .and_then(|()| match permissions {
                Some(permissions) => temp.set_permissions(permissions),
                None => default_permissions(&temp),
            })
            .and_then(|()| fs::rename(&temp_path, &self.snapshot));
        drop(temp);
        if let Err(e) = written {
            let _ = fs::remove_file(&temp_path);
            return Err(io_error(&self.snapshot, "writing the snapshot", e));
        }
        sync_dir(dir);
        self.snapshot_writes += 1;
        Ok(())
    }

    /// The path as given to [`FileStore::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A new snapshot is readable by all, as the old Python store made it (0644, whatever the umask).
fn default_permissions(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static SERIAL: AtomicU64 = AtomicU64::new(0);
            let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("kato_vocab_{name}_{}_{serial}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// What the bindings do per learn: push the unseen symbols, persist them, roll back on failure.
    fn learn(store: &mut FileStore, vocab: &mut Vocabulary, symbols: &[&str]) {
        let new = vocab.unseen(symbols.iter().copied());
        let first = vocab.push_all(&new).unwrap();
        if let Err(e) = store.append(vocab, first) {
            vocab.truncate(first);
            panic!("append failed: {e}");
        }
    }

    fn reopen(path: &Path) -> Vocabulary {
        FileStore::open(path).unwrap().1
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    fn corrupt(path: &Path) -> String {
        match FileStore::open(path) {
            Err(KatoError::CorruptVocabulary(text)) => text,
            other => panic!("expected CorruptVocabulary, got {other:?}"),
        }
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    #[test]
    fn reopen_after_appends_equals_memory() {
        let dir = TempDir::new("reopen");
        let path = dir.join("sub/vocab.json");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        assert!(vocab.is_empty());
        assert_eq!(store.path(), path);
        learn(&mut store, &mut vocab, &["a", "b", "a", "日本", ""]);
        learn(&mut store, &mut vocab, &["b", "🎉", "line\nbreak", "q\"uote"]);
        learn(&mut store, &mut vocab, &["a"]);
        assert_eq!(vocab.len(), 7);
        assert!(!path.exists(), "appends write only the log");
        drop(store);
        let back = reopen(&path);
        assert_eq!(back, vocab);
        assert_eq!(back.id("🎉"), Some(4));
        assert_eq!(back.symbol(5), Some("line\nbreak"));
        // Reopening does not change the files; appending after it continues the ids.
        let log_path = beside(&path, ".log");
        let log_before = fs::read(&log_path).unwrap();
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        assert_eq!(fs::read(&log_path).unwrap(), log_before);
        learn(&mut store, &mut vocab, &["z"]);
        assert_eq!(vocab.id("z"), Some(7));
        store.rewrite(&vocab).unwrap();
        drop(store);
        assert_eq!(file_len(&log_path), 0);
        assert_eq!(reopen(&path), vocab);
    }

    /// A snapshot as the old Python store wrote it loads unchanged, and a rewrite of the same vocabulary reproduces
    /// it byte for byte.
    #[test]
    fn python_written_snapshot_loads_and_round_trips() {
        let dir = TempDir::new("python");
        let path = dir.join("vocab.json");
        let python = r#"{"class":"gpu_vocabulary","symbol_to_id":{"a":0,"\u00e9":1,"\ud83c\udf89":2},"id_to_symbol":{"0":"a","1":"\u00e9","2":"\ud83c\udf89"},"vocab_size":3,"next_id":3}"#;
        fs::write(&path, python).unwrap();
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        assert_eq!(vocab.iter().collect::<Vec<_>>(), [(0, "a"), (1, "é"), (2, "🎉")]);
        store.rewrite(&vocab).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), python);
        learn(&mut store, &mut vocab, &["b"]);
        assert_eq!(fs::read_to_string(&path).unwrap(), python, "an append leaves the snapshot alone");
        drop(store);
        assert_eq!(reopen(&path).id("b"), Some(3));
    }

    #[test]
    fn corrupt_snapshot_is_refused_and_releases_the_lock() {
        let dir = TempDir::new("corrupt_snapshot");
        let path = dir.join("vocab.json");
        for (content, expected) in [
            ("{not json", "not a valid vocabulary document"),
            (r#"{"symbol_to_id":{},"id_to_symbol":{},"next_id":0}"#, "'class' is missing"),
            (r#"{"class":"gpu_vocabulary","symbol_to_id":{"a":0},"id_to_symbol":{},"next_id":1}"#, "not the inverse"),
        ] {
            fs::write(&path, content).unwrap();
            let text = corrupt(&path);
            assert!(text.contains(expected) && text.contains("vocab.json"), "{text}");
        }
        fs::remove_file(&path).unwrap();
        assert!(FileStore::open(&path).unwrap().1.is_empty());
    }

    /// A crash in the middle of an append's write leaves half a line: it is dropped and cut off the file.
    #[test]
    fn torn_last_line_is_dropped_and_repaired() {
        let dir = TempDir::new("torn");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a", "b", "c"]);
        drop(store);
        let good = fs::read(&log_path).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"id":3,"symbol":"hal"#);
        fs::write(&log_path, &torn).unwrap();
        let (mut store, mut back) = FileStore::open(&path).unwrap();
        assert_eq!(back, vocab);
        assert_eq!(fs::read(&log_path).unwrap(), good, "the torn tail is cut off");
        learn(&mut store, &mut back, &["d"]);
        assert_eq!(back.id("d"), Some(3));
        drop(store);
        assert_eq!(reopen(&path).symbol(3), Some("d"));

        // A torn header (a crash during the first append) leaves an empty log.
        let path = dir.join("fresh.json");
        let log_path = beside(&path, ".log");
        fs::write(&log_path, br#"{"snapshot_bytes":0,"snap"#).unwrap();
        assert!(reopen(&path).is_empty());
        assert_eq!(file_len(&log_path), 0);
    }

    /// A crash between a compaction's rename and the log's truncation: the new snapshot holds everything and the
    /// old log is still there. Simulated by putting the old log back after a rewrite.
    #[test]
    fn crash_between_rename_and_log_truncation() {
        let dir = TempDir::new("crash_compaction");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a", "b"]);
        store.rewrite(&vocab).unwrap();
        learn(&mut store, &mut vocab, &["c", "d"]);
        let old_log = fs::read(&log_path).unwrap();
        store.rewrite(&vocab).unwrap();
        drop(store);
        fs::write(&log_path, &old_log).unwrap();
        let (mut store, mut back) = FileStore::open(&path).unwrap();
        assert_eq!(back, vocab);
        assert_eq!(file_len(&log_path), 0, "the stale log is emptied");
        learn(&mut store, &mut back, &["e"]);
        drop(store);
        assert_eq!(reopen(&path).symbol(4), Some("e"));

        // The same crash in clear(): the old log must not bring the cleared symbols back.
        let (mut store, vocab) = FileStore::open(&path).unwrap();
        assert_eq!(vocab.len(), 5);
        let old_log = fs::read(&log_path).unwrap();
        assert!(!old_log.is_empty());
        store.rewrite(&Vocabulary::new()).unwrap();
        drop(store);
        fs::write(&log_path, &old_log).unwrap();
        assert!(reopen(&path).is_empty());

        // clear() when the snapshot already is the empty document: the rewrite changes no byte of it, so emptying
        // the log must be the whole change.
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["x", "y"]);
        let snapshot = fs::read(&path).unwrap();
        store.rewrite(&Vocabulary::new()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), snapshot);
        drop(store);
        assert!(reopen(&path).is_empty());
    }

    /// A log without a header (as a hand-made or foreign log would be): lines the snapshot holds are skipped when
    /// they agree with it, and the log is compacted away; a line that contradicts it is refused.
    #[test]
    fn log_lines_below_the_snapshot_next_id() {
        let dir = TempDir::new("below");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a", "b", "c"]);
        store.rewrite(&vocab).unwrap();
        drop(store);
        fs::write(
            &log_path,
            "{\"batch\":3}\n{\"id\":1,\"symbol\":\"b\"}\n{\"id\":2,\"symbol\":\"c\"}\n{\"id\":3,\"symbol\":\"d\"}\n",
        )
        .unwrap();
        let (store, back) = FileStore::open(&path).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), [(0, "a"), (1, "b"), (2, "c"), (3, "d")]);
        assert_eq!(store.snapshot_writes, 1, "compacted");
        assert_eq!(file_len(&log_path), 0);
        drop(store);
        assert_eq!(reopen(&path), back);

        fs::write(&log_path, "{\"batch\":1}\n{\"id\":1,\"symbol\":\"z\"}\n").unwrap();
        let text = corrupt(&path);
        assert!(text.contains("line 2") && text.contains("\"z\"") && text.contains("\"b\""), "{text}");
        // Refused, and nothing was changed: the files still say the same.
        assert_eq!(fs::read_to_string(&log_path).unwrap(), "{\"batch\":1}\n{\"id\":1,\"symbol\":\"z\"}\n");
    }

    /// Every other inconsistency in a log tied to the snapshot is refused rather than guessed at.
    #[test]
    fn inconsistent_logs_are_refused() {
        let dir = TempDir::new("inconsistent");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a", "b"]);
        store.rewrite(&vocab).unwrap();
        learn(&mut store, &mut vocab, &["c"]);
        drop(store);
        let log = fs::read_to_string(&log_path).unwrap();
        let header = log.lines().next().unwrap().to_string();
        assert!(header.starts_with("{\"snapshot_bytes\":"), "{header}");
        for (lines, expected) in [
            (vec![r#"{"id":0,"symbol":"c"}"#], "id 0 is \"c\" here but Some(\"a\")"),
            (vec![r#"{"id":3,"symbol":"c"}"#], "id 3 where 2 comes next"),
            (vec![r#"{"id":2,"symbol":"a"}"#], "two ids"),
            (vec![r#"{"id":2,"symbol":"c"}"#, r#"{"id":3,"symbol":"c"}"#], "line 4: symbol \"c\" has two ids"),
            (vec![r#"{"batch":1}"#, r#"{"id":2,"symbol":"c"}"#, r#"{"id":3,"symbol":"d"}"#], "outside a batch"),
            (vec![r#"{"id":-2,"symbol":"c"}"#], "not a log line"),
            (vec![r#"{"id":2}"#], "neither a header nor"),
            (vec![r#"{"id":2,"symbol":"c","extra":1}"#], "unknown field"),
            (vec!["garbage"], "not a log line"),
            (vec![""], "not a log line"),
            (vec![header.as_str()], "a header after the first line"),
        ] {
            let mut text = format!("{header}\n");
            if lines[0].starts_with("{\"id\"") {
                text.push_str(&format!("{{\"batch\":{}}}\n", lines.len()));
            }
            for line in &lines {
                text.push_str(line);
                text.push('\n');
            }
            fs::write(&log_path, &text).unwrap();
            let message = corrupt(&path);
            assert!(message.contains(expected), "{lines:?}: {message}");
        }
        fs::write(&log_path, "{\"snapshot_bytes\":1,\"snapshot_hash\":\"xyz\"}\n").unwrap();
        assert!(corrupt(&path).contains("not hexadecimal"));
        fs::write(&log_path, &log).unwrap();
        assert_eq!(reopen(&path), vocab);
    }

    /// A crash can cut a large append short at any byte, a line boundary included: the whole append is dropped.
    #[test]
    fn an_append_cut_short_is_dropped_whole() {
        let dir = TempDir::new("batch");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a", "b"]);
        let kept = vocab.clone();
        let good = file_len(&log_path);
        learn(&mut store, &mut vocab, &["c", "d", "e"]);
        drop(store);
        let full = fs::read(&log_path).unwrap();
        // Cut after the batch line and after each complete symbol line but the last.
        let ends: Vec<usize> = full.iter().enumerate().filter(|&(_, &b)| b == b'\n').map(|(k, _)| k + 1).collect();
        for &cut in ends.iter().filter(|&&end| end > good as usize && end < full.len()) {
            fs::write(&log_path, &full[..cut]).unwrap();
            let (store, back) = FileStore::open(&path).unwrap();
            assert_eq!(back, kept, "cut at byte {cut}");
            assert_eq!(file_len(&log_path), good, "the partial append is cut off");
            drop(store);
        }
        fs::write(&log_path, &full).unwrap();
        assert_eq!(reopen(&path), vocab);
    }

    #[test]
    fn second_open_is_refused_while_the_first_lives() {
        let dir = TempDir::new("lock");
        let path = dir.join("vocab.json");
        let link = dir.join("link.json");
        symlink("vocab.json", &link).unwrap();
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a"]);
        for other in [&path, &link] {
            match FileStore::open(other) {
                Err(KatoError::StoreLocked(text)) => assert_eq!(text, other.display().to_string()),
                result => panic!("expected StoreLocked, got {result:?}"),
            }
        }
        drop(store);
        let (_store, back) = FileStore::open(&link).unwrap();
        assert_eq!(back, vocab);
    }

    #[test]
    fn symlinks_stay_links() {
        let dir = TempDir::new("symlink");
        fs::create_dir(dir.join("data")).unwrap();
        let target = dir.join("data/real.json");
        let link = dir.join("link.json");
        // An existing target, through a relative link.
        let (mut store, mut vocab) = FileStore::open(&target).unwrap();
        learn(&mut store, &mut vocab, &["a"]);
        store.rewrite(&vocab).unwrap();
        drop(store);
        symlink("data/real.json", &link).unwrap();
        let (mut store, mut back) = FileStore::open(&link).unwrap();
        assert_eq!(back, vocab);
        learn(&mut store, &mut back, &["b"]);
        assert!(dir.join("data/real.json.log").exists() && !dir.join("link.json.log").exists());
        store.rewrite(&back).unwrap();
        drop(store);
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("data/real.json"));
        assert_eq!(reopen(&target), back);

        // A dangling link, through a chain of two links: the target is created behind them.
        let first = dir.join("first.json");
        let second = dir.join("second.json");
        symlink(&second, &first).unwrap();
        symlink(dir.join("data/later.json"), &second).unwrap();
        let (mut store, mut vocab) = FileStore::open(&first).unwrap();
        assert!(vocab.is_empty());
        learn(&mut store, &mut vocab, &["x", "y"]);
        store.rewrite(&vocab).unwrap();
        drop(store);
        for link in [&first, &second] {
            assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
        }
        assert!(fs::symlink_metadata(dir.join("data/later.json")).unwrap().is_file());
        assert_eq!(reopen(&dir.join("data/later.json")), vocab);

        // A loop is an error, not a hang.
        symlink("loop_b", dir.join("loop_a")).unwrap();
        symlink("loop_a", dir.join("loop_b")).unwrap();
        assert!(matches!(FileStore::open(&dir.join("loop_a")), Err(KatoError::StoreIo(t)) if t.contains("symbolic")));
    }

    #[test]
    fn file_mode_is_kept() {
        let dir = TempDir::new("mode");
        let path = dir.join("vocab.json");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        learn(&mut store, &mut vocab, &["a"]);
        store.rewrite(&vocab).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        learn(&mut store, &mut vocab, &["b"]);
        store.rewrite(&vocab).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(store.snapshot_writes, 2);
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 3, "{leftovers:?}");
    }

    #[test]
    fn out_of_order_appends_are_refused() {
        let dir = TempDir::new("sync");
        let path = dir.join("vocab.json");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        vocab.push_all(&["a"]).unwrap();
        let second = vocab.push_all(&["b"]).unwrap();
        assert!(matches!(store.append(&vocab, second), Err(KatoError::StoreOutOfSync(_))));
        store.append(&vocab, 0).unwrap();
        assert!(matches!(store.append(&vocab, 0), Err(KatoError::StoreOutOfSync(_))));
        store.append(&vocab, 2).unwrap(); // nothing new: nothing to do
        drop(store);
        assert_eq!(reopen(&path), vocab);
    }

    /// The log is compacted once it holds more lines than max(4096, symbols in the snapshot), and shrinks to nothing.
    #[test]
    fn compaction_happens_and_the_log_shrinks() {
        let dir = TempDir::new("compaction");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        let mut largest_log = 0;
        for batch in 0..5 {
            let new = names(&format!("b{batch}-"), 1000);
            learn(&mut store, &mut vocab, &refs(&new));
            largest_log = largest_log.max(file_len(&log_path));
            assert_eq!(store.snapshot_writes, u64::from(batch == 4), "batch {batch}");
        }
        assert!(largest_log > 4000 * 20);
        assert_eq!(file_len(&log_path), 0);
        assert_eq!(store.snapshot_symbols, 5000);
        // The next compaction waits for 5000 more lines.
        learn(&mut store, &mut vocab, &refs(&names("c", 4999)));
        assert_eq!(store.snapshot_writes, 1);
        learn(&mut store, &mut vocab, &["one more", "and another"]);
        assert_eq!(store.snapshot_writes, 2);
        drop(store);
        assert_eq!(reopen(&path), vocab);
    }

    /// Learning one symbol into a 300,000-symbol vocabulary writes one log line, not the snapshot.
    #[test]
    fn one_new_symbol_costs_one_line_whatever_the_size() {
        let dir = TempDir::new("large");
        let path = dir.join("vocab.json");
        let log_path = beside(&path, ".log");
        let (mut store, mut vocab) = FileStore::open(&path).unwrap();
        let many = names("VCTR|", 300_000);
        vocab.push_all(&refs(&many)).unwrap();
        store.rewrite(&vocab).unwrap();
        let before = fs::metadata(&path).unwrap();
        assert!(before.len() > 5_000_000);
        learn(&mut store, &mut vocab, &["new-1"]);
        let after_first = file_len(&log_path);
        learn(&mut store, &mut vocab, &["new-2"]);
        let line = "{\"batch\":1}\n{\"id\":300001,\"symbol\":\"new-2\"}\n";
        assert_eq!(file_len(&log_path), after_first + line.len() as u64);
        assert!(fs::read_to_string(&log_path).unwrap().ends_with(&line));
        assert_eq!(store.snapshot_writes, 1);
        let after = fs::metadata(&path).unwrap();
        assert_eq!(
            (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
            (before.ino(), before.len(), before.mtime(), before.mtime_nsec())
        );
        drop(store);
        assert_eq!(reopen(&path), vocab);
    }
}
