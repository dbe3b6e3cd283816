//! Snapshots: a matcher and the vocabulary its ids come from, in one file, for a fast restart.
//!
//! Layout (every integer little-endian):
//! - a 64-byte prelude: magic `KATOSNAP`, format version (u32), 4 reserved bytes, then the
//!   offset, length and checksum of the header, the file's length, and the checksum of the
//!   prelude's first 48 bytes;
//! - sections of raw arrays, each starting at a multiple of 64 and zero-padded to one, so a later
//!   version can map them instead of reading them;
//! - the header (JSON): format version, the matcher's settings, counts, and per section its
//!   offset, length and checksums: one per [`BLOCK`] bytes of the padded section (format 2), so
//!   a load reads and verifies the blocks on every core, straight into the arrays the matcher
//!   keeps; format 1 had one checksum per section, a chain only one core can follow (it still
//!   loads, more slowly).
//!
//! Removed patterns are not written; live ones keep their slot order, bulk tier first, so a
//! loaded matcher holds the same patterns in the same tiers. A snapshot is written to a temporary
//! file in the target's directory, synced, renamed over the target and the directory synced: a
//! crash leaves the old file or the new one, never a mix.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{KatoError, Result};
use crate::matcher::Matcher;
use crate::metrics::Metric;
use crate::store::{AnyRun, NameSnapshot, PatternStore, TokenColumn};
use crate::vocabulary::Vocabulary;

pub const MAGIC: &[u8; 8] = b"KATOSNAP";
/// The format this build writes. It reads this one and version 1.
pub const FORMAT_VERSION: u32 = 2;
const PRELUDE: usize = 64;
const ALIGN: u64 = 64;
/// Bytes per checksummed block of a section (format 2), and bytes hashed and written (or read)
/// at a time. 1 MiB: 1,400 blocks for a 10M-pattern file, plenty for every core, and about 28 KB
/// of checksums in its header.
const BLOCK: usize = 1 << 20;

// ------------------------------------------------------------------------------- checksum

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

/// A 64-bit checksum over 8-byte words in four independent lanes (xxHash64's round), so the
/// multiplies overlap: several GB/s on one core, where a byte-wise hash would be the bottleneck.
/// Detects corruption, not tampering.
#[derive(Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    len: u64,
}

impl Default for Checksum {
    fn default() -> Checksum {
        Checksum { lanes: [P1, P2, P3, P1 ^ P2], len: 0 }
    }
}

#[inline(always)]
fn round(acc: u64, word: u64) -> u64 {
    acc.wrapping_add(word.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
}

fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8-byte word"))
}

impl Checksum {
    /// Adds `bytes`, whose length must be a multiple of 32 (every caller hashes whole blocks and
    /// gives the tail to [`Checksum::finish`]).
    pub fn update(&mut self, bytes: &[u8]) {
        debug_assert_eq!(bytes.len() % 32, 0);
        for block in bytes.chunks_exact(32) {
            for (lane, w) in self.lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = round(*lane, word(w));
            }
        }
        self.len += bytes.len() as u64;
    }

    /// The checksum of everything added plus `tail` (any length).
    pub fn finish(mut self, tail: &[u8]) -> u64 {
        let whole = tail.len() / 32 * 32;
        self.update(&tail[..whole]);
        let mut last = [0u8; 32];
        last[..tail.len() - whole].copy_from_slice(&tail[whole..]);
        self.update(&last);
        self.len -= (32 - (tail.len() - whole)) as u64;
        let [a, b, c, d] = self.lanes;
        let mut h = a.rotate_left(1) ^ b.rotate_left(7) ^ c.rotate_left(12) ^ d.rotate_left(18) ^ self.len;
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// The checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    Checksum::default().finish(bytes)
}

// ------------------------------------------------------------------------------- header

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Section {
    name: String,
    offset: u64,
    /// Bytes of data (the padding after them is not counted).
    length: u64,
    /// Format 1: the checksum of the whole padded section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksum: Option<u64>,
    /// Format 2: the checksum of each [`BLOCK`] bytes of the padded section (the last block
    /// shorter), in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blocks: Option<Vec<u64>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Header {
    format_version: u32,
    metric: String,
    autojunk: bool,
    max_pattern_length: Option<usize>,
    patterns: u64,
    bulk_patterns: u64,
    tokens: u64,
    /// Bytes per stored symbol id: 2 or 4.
    token_width: u32,
    events: u64,
    symbols: u64,
    next_id: u32,
    /// Format 2: [`BLOCK`], so a reader of another block size refuses the file plainly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksum_block: Option<u64>,
    sections: Vec<Section>,
}

/// Section names, in file order.
const SECTIONS: [&str; 10] = [
    "vocab_ids",
    "vocab_ends",
    "vocab_text",
    "name_ends",
    "name_text",
    "offsets",
    "tokens",
    "event_offsets",
    "event_lens",
    "name_order",
];

/// What a snapshot holds besides the arrays: what a loader checks a configuration against.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub metric: Metric,
    pub max_pattern_length: Option<usize>,
    pub patterns: usize,
    pub bulk_patterns: usize,
    pub symbols: usize,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> KatoError {
    KatoError::InvalidSnapshot(format!("{}: {what}", path.display()))
}

fn io(path: &Path, action: &str, err: std::io::Error) -> KatoError {
    KatoError::SnapshotIo(format!("{action} {}: {err}", path.display()))
}

// ------------------------------------------------------------------------------- writing

/// Writes sections back to back, each aligned and checksummed.
struct Writer {
    out: BufWriter<File>,
    /// The format written: 1 only for the tests of reading it.
    version: u32,
    at: u64,
    buffer: Vec<u8>,
    /// The running checksum of the section (format 1).
    hash: Checksum,
    /// The section's block checksums so far (format 2).
    blocks: Vec<u64>,
    start: u64,
    sections: Vec<Section>,
}

impl Writer {
    fn bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(BLOCK - self.buffer.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() == BLOCK {
                // The buffer starts at the section's start, so each full one is one block.
                if self.version == 1 {
                    self.hash.update(&self.buffer);
                } else {
                    self.blocks.push(checksum(&self.buffer));
                }
                self.out.write_all(&self.buffer)?;
                self.at += BLOCK as u64;
                self.buffer.clear();
            }
        }
        Ok(())
    }

    fn u16s(&mut self, values: &[u16]) -> std::io::Result<()> {
        for chunk in values.chunks(BLOCK / 2) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.bytes(&bytes)?;
        }
        Ok(())
    }

    fn u32s(&mut self, values: &[u32]) -> std::io::Result<()> {
        for chunk in values.chunks(BLOCK / 4) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.bytes(&bytes)?;
        }
        Ok(())
    }

    fn u64(&mut self, value: u64) -> std::io::Result<()> {
        self.bytes(&value.to_le_bytes())
    }

    /// Ends the current section (padding it to [`ALIGN`]) and records it under `name`.
    fn end_section(&mut self, name: &str) -> std::io::Result<()> {
        let length = self.at + self.buffer.len() as u64 - self.start;
        let padded = length.next_multiple_of(ALIGN);
        self.buffer.resize(self.buffer.len() + (padded - length) as usize, 0);
        let hash = std::mem::take(&mut self.hash);
        let (checksum, blocks) = if self.version == 1 {
            (Some(hash.finish(&self.buffer)), None)
        } else {
            if !self.buffer.is_empty() {
                self.blocks.push(checksum(&self.buffer));
            }
            (None, Some(std::mem::take(&mut self.blocks)))
        };
        self.out.write_all(&self.buffer)?;
        self.at += self.buffer.len() as u64;
        self.buffer.clear();
        self.sections.push(Section { name: name.to_string(), offset: self.start, length, checksum, blocks });
        self.start = self.at;
        Ok(())
    }
}

/// Runs of consecutive live slots, as `(first, count)`.
fn live_runs(matcher: &Matcher) -> Vec<(u32, usize)> {
    let (store, _) = matcher.store_and_order();
    let mut runs = Vec::new();
    let mut slot = 0u32;
    let slots = store.slots() as u32;
    while slot < slots {
        if !store.is_live(slot) {
            slot += 1;
            continue;
        }
        let first = slot;
        while slot < slots && store.is_live(slot) {
            slot += 1;
        }
        runs.push((first, (slot - first) as usize));
    }
    runs
}

fn write_sections(w: &mut Writer, vocab: &Vocabulary, matcher: &Matcher) -> std::io::Result<Header> {
    let (store, order) = matcher.store_and_order();
    let runs = live_runs(matcher);
    let live = || runs.iter().flat_map(|&(first, count)| first..first + count as u32);

    let ids: Vec<u32> = vocab.iter().map(|(id, _)| id).collect();
    w.u32s(&ids)?;
    w.end_section(SECTIONS[0])?;
    let mut end = 0u64;
    for (_, symbol) in vocab.iter() {
        end += symbol.len() as u64;
        w.u64(end)?;
    }
    w.end_section(SECTIONS[1])?;
    for (_, symbol) in vocab.iter() {
        w.bytes(symbol.as_bytes())?;
    }
    w.end_section(SECTIONS[2])?;

    let mut end = 0u64;
    for slot in live() {
        end += store.name(slot).len() as u64;
        w.u64(end)?;
    }
    w.end_section(SECTIONS[3])?;
    for slot in live() {
        w.bytes(store.name(slot).as_bytes())?;
    }
    w.end_section(SECTIONS[4])?;

    let mut tokens = 0u64;
    w.u64(0)?;
    for slot in live() {
        tokens += store.len_of(slot) as u64;
        w.u64(tokens)?;
    }
    w.end_section(SECTIONS[5])?;
    for &(first, count) in &runs {
        match store.run(first, count) {
            AnyRun::Narrow(run) => w.u16s(run.tokens())?,
            AnyRun::Wide(run) => w.u32s(run.tokens())?,
        }
    }
    w.end_section(SECTIONS[6])?;

    let mut events = 0u64;
    w.u64(0)?;
    for slot in live() {
        events += store.event_lens(slot).len() as u64;
        w.u64(events)?;
    }
    w.end_section(SECTIONS[7])?;
    for slot in live() {
        w.u32s(store.event_lens(slot))?;
    }
    w.end_section(SECTIONS[8])?;

    // Every live slot ranked by name (what a promotion's rebuild gives), in the new slot
    // numbers: a load then needs no sort.
    let mut new_slot = vec![u32::MAX; store.slots()];
    for (k, slot) in live().enumerate() {
        new_slot[slot as usize] = k as u32;
    }
    let ranked: Vec<u32> = order.rebuilt(store, store.slots()).ranked().iter().map(|&s| new_slot[s as usize]).collect();
    debug_assert_eq!(ranked.len(), live().count());
    w.u32s(&ranked)?;
    w.end_section(SECTIONS[9])?;

    let bulk_end = matcher.bulk_end() as u32;
    let metric = matcher.metric();
    Ok(Header {
        format_version: w.version,
        metric: metric.name().to_string(),
        autojunk: matches!(metric, Metric::Difflib { autojunk: true }),
        max_pattern_length: matcher.max_pattern_length(),
        patterns: live().count() as u64,
        bulk_patterns: live().filter(|&s| s < bulk_end).count() as u64,
        tokens,
        token_width: store.token_width() as u32,
        events,
        symbols: vocab.len() as u64,
        next_id: vocab.next_id(),
        checksum_block: (w.version >= 2).then_some(BLOCK as u64),
        sections: std::mem::take(&mut w.sections),
    })
}

/// The temporary file a snapshot of `path` is written to before the rename.
fn temporary(path: &Path) -> PathBuf {
    // Unique per save in this process too: two matchers may save to one path at once.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let save = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{save}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `matcher` and `vocab` (the vocabulary its ids come from) to `path`, atomically. The
/// caller holds both still for the duration (the snapshot is one point in time).
pub fn save(path: &Path, vocab: &Vocabulary, matcher: &Matcher) -> Result<()> {
    save_version(path, vocab, matcher, FORMAT_VERSION)
}

/// [`save`] in format `version` (1 or 2).
fn save_version(path: &Path, vocab: &Vocabulary, matcher: &Matcher, version: u32) -> Result<()> {
    if path.file_name().is_none() {
        return Err(KatoError::InvalidValue(format!("snapshot path {} names no file", path.display())));
    }
    let tmp = temporary(path);
    let written = write_file(&tmp, vocab, matcher, version);
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io(path, "renaming the snapshot onto", err));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // The rename is durable once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, "syncing the directory", e))
}

fn write_file(tmp: &Path, vocab: &Vocabulary, matcher: &Matcher, version: u32) -> Result<()> {
    let fail = |e| io(tmp, "writing", e);
    let file = File::create(tmp).map_err(fail)?;
    let mut w = Writer {
        out: BufWriter::with_capacity(BLOCK, file),
        version,
        at: PRELUDE as u64,
        buffer: Vec::with_capacity(BLOCK),
        hash: Checksum::default(),
        blocks: Vec::new(),
        start: PRELUDE as u64,
        sections: Vec::new(),
    };
    w.out.write_all(&[0u8; PRELUDE]).map_err(fail)?;
    let header = write_sections(&mut w, vocab, matcher).map_err(fail)?;
    let json = serde_json::to_vec(&header).map_err(|e| KatoError::InvalidValue(e.to_string()))?;
    let header_offset = w.at;
    w.out.write_all(&json).map_err(fail)?;
    let file_len = header_offset + json.len() as u64;

    let mut prelude = [0u8; PRELUDE];
    prelude[..8].copy_from_slice(MAGIC);
    prelude[8..12].copy_from_slice(&version.to_le_bytes());
    prelude[16..24].copy_from_slice(&header_offset.to_le_bytes());
    prelude[24..32].copy_from_slice(&(json.len() as u64).to_le_bytes());
    prelude[32..40].copy_from_slice(&checksum(&json).to_le_bytes());
    prelude[40..48].copy_from_slice(&file_len.to_le_bytes());
    let own = checksum(&prelude[..48]);
    prelude[48..56].copy_from_slice(&own.to_le_bytes());
    let mut file = w.out.into_inner().map_err(|e| fail(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(fail)?;
    file.write_all(&prelude).map_err(fail)?;
    file.sync_all().map_err(fail)
}

// ------------------------------------------------------------------------------- reading

/// Reads and checks the prelude and header of `file` against the file's length.
fn read_header(path: &Path, file: &mut File) -> Result<Header> {
    let len = file.metadata().map_err(|e| io(path, "reading", e))?.len();
    let mut prelude = [0u8; PRELUDE];
    if len < PRELUDE as u64 {
        return Err(corrupt(path, format!("truncated: {len} bytes, shorter than the {PRELUDE}-byte prelude")));
    }
    file.read_exact(&mut prelude).map_err(|e| io(path, "reading", e))?;
    if &prelude[..8] != MAGIC {
        return Err(corrupt(path, "not a kato_gpu snapshot (wrong magic bytes)"));
    }
    let version = u32::from_le_bytes(prelude[8..12].try_into().expect("4 bytes"));
    if version != 1 && version != FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!(
                "snapshot format version {version} is not supported (this build reads versions 1 and \
                 {FORMAT_VERSION})"
            ),
        ));
    }
    let field = |k: usize| word(&prelude[k..k + 8]);
    if checksum(&prelude[..48]) != field(48) || prelude[56..].iter().any(|&b| b != 0) {
        return Err(corrupt(path, "checksum mismatch in the prelude"));
    }
    let (header_offset, header_len, header_sum, file_len) = (field(16), field(24), field(32), field(40));
    if len < file_len {
        return Err(corrupt(path, format!("truncated: {len} bytes of {file_len}")));
    }
    if len > file_len {
        return Err(corrupt(path, format!("{len} bytes, more than the {file_len} written")));
    }
    if header_offset.checked_add(header_len) != Some(file_len) || header_offset < PRELUDE as u64 {
        return Err(corrupt(path, "inconsistent header position"));
    }
    file.seek(SeekFrom::Start(header_offset)).map_err(|e| io(path, "reading", e))?;
    let mut json = vec![0u8; header_len as usize];
    file.read_exact(&mut json).map_err(|e| io(path, "reading", e))?;
    if checksum(&json) != header_sum {
        return Err(corrupt(path, "checksum mismatch in the header"));
    }
    let header: Header = serde_json::from_slice(&json).map_err(|e| corrupt(path, format!("unreadable header: {e}")))?;
    if header.format_version != version {
        return Err(corrupt(path, "the header's format version differs from the prelude's"));
    }
    let names: Vec<&str> = header.sections.iter().map(|s| s.name.as_str()).collect();
    if names != SECTIONS {
        return Err(corrupt(path, format!("unexpected sections {names:?}")));
    }
    if version >= 2 && header.checksum_block != Some(BLOCK as u64) {
        return Err(corrupt(path, format!("checksum block {:?}, not {BLOCK} bytes", header.checksum_block)));
    }
    let mut at = PRELUDE as u64;
    for s in &header.sections {
        let end = s.offset.checked_add(s.length.next_multiple_of(ALIGN));
        if s.offset != at || end.is_none_or(|e| e > header_offset) {
            return Err(corrupt(path, format!("section {} lies outside the file", s.name)));
        }
        at = end.expect("checked");
        let checksums_fit = match (version, &s.checksum, &s.blocks) {
            (1, Some(_), None) => true,
            (_, None, Some(blocks)) => blocks.len() as u64 == s.length.div_ceil(BLOCK as u64),
            _ => false,
        };
        if !checksums_fit {
            return Err(corrupt(path, format!("section {} lacks its checksums", s.name)));
        }
    }
    Ok(header)
}

/// A value of a section: little-endian, `WIDTH` bytes.
trait Word: Copy + Send + Sync {
    const WIDTH: usize;
    const ZERO: Self;
    fn decode(bytes: &[u8]) -> Self;
}

macro_rules! word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            const ZERO: $t = 0;
            #[inline]
            fn decode(bytes: &[u8]) -> $t {
                <$t>::from_le_bytes(bytes.try_into().expect("one value's bytes"))
            }
        }
    )*};
}
word!(u8, u16, u32, u64);

/// Fills `buffer` from `offset` of `file`, without moving a cursor: blocks are read by several
/// threads at once.
#[cfg(unix)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buffer: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buffer.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buffer, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            read => (buffer, offset) = (&mut buffer[read..], offset + read as u64),
        }
    }
    Ok(())
}

/// An open snapshot whose header has been checked.
struct Source<'a> {
    path: &'a Path,
    file: File,
}

impl Source<'_> {
    fn mismatch(&self, section: &Section) -> KatoError {
        corrupt(self.path, format!("checksum mismatch in section {}", section.name))
    }

    /// The `count` values of `section`, verified against its checksums. Format 2: each block
    /// is read by one task straight into its place in the array, and hashed while in cache.
    fn array<T: Word>(&self, section: &Section, count: u64) -> Result<Vec<T>> {
        if count.checked_mul(T::WIDTH as u64) != Some(section.length) {
            return Err(corrupt(
                self.path,
                format!("section {} has {} bytes, not {count} values", section.name, section.length),
            ));
        }
        let padded = section.length.next_multiple_of(ALIGN);
        // `count` values are in the file, so they fit in memory's address space.
        let mut values = vec![T::ZERO; count as usize];
        let Some(blocks) = &section.blocks else { return self.array_v1(section, values, padded) };
        values.par_chunks_mut(BLOCK / T::WIDTH).enumerate().try_for_each_init(Vec::new, |buffer, (k, values)| {
            let start = (k * BLOCK) as u64;
            buffer.resize((padded - start).min(BLOCK as u64) as usize, 0);
            read_at(&self.file, buffer, section.offset + start).map_err(|e| io(self.path, "reading", e))?;
            if checksum(buffer) != blocks[k] {
                return Err(self.mismatch(section));
            }
            for (value, bytes) in values.iter_mut().zip(buffer.chunks_exact(T::WIDTH)) {
                *value = T::decode(bytes);
            }
            Ok(())
        })?;
        Ok(values)
    }

    /// Format 1: one checksum over the whole section, so one pass in order.
    fn array_v1<T: Word>(&self, section: &Section, mut values: Vec<T>, padded: u64) -> Result<Vec<T>> {
        let mut hash = Checksum::default();
        let mut buffer = vec![0u8; BLOCK.min(padded as usize)];
        let mut filled = values.chunks_mut(BLOCK / T::WIDTH);
        let mut done = 0u64;
        while done + (BLOCK as u64) < padded {
            read_at(&self.file, &mut buffer, section.offset + done).map_err(|e| io(self.path, "reading", e))?;
            hash.update(&buffer);
            decode(filled.next().unwrap_or_default(), &buffer);
            done += BLOCK as u64;
        }
        let last = &mut buffer[..(padded - done) as usize];
        read_at(&self.file, last, section.offset + done).map_err(|e| io(self.path, "reading", e))?;
        decode(filled.next().unwrap_or_default(), last);
        if Some(hash.finish(last)) != section.checksum {
            return Err(self.mismatch(section));
        }
        Ok(values)
    }
}

/// Fills `values` from the start of `bytes`.
fn decode<T: Word>(values: &mut [T], bytes: &[u8]) {
    for (value, bytes) in values.iter_mut().zip(bytes.chunks_exact(T::WIDTH)) {
        *value = T::decode(bytes);
    }
}

/// The strings of `text` cut at `ends`, checked to be ascending and on character boundaries.
fn cut<'a>(path: &Path, text: &'a str, ends: &[u64], what: &str) -> Result<Vec<&'a str>> {
    let mut start = 0usize;
    ends.iter()
        .map(|&end| {
            let piece = usize::try_from(end).ok().and_then(|end| text.get(start..end));
            let piece = piece.ok_or_else(|| corrupt(path, format!("bad {what} boundaries")))?;
            start = end as usize;
            Ok(piece)
        })
        .collect()
}

/// Reads and verifies a snapshot: the vocabulary and a matcher holding its patterns, bulk tier
/// and recent tier as they were saved. Any damage (truncation, a changed byte, an unknown
/// version) is an [`KatoError::InvalidSnapshot`] naming the problem; nothing is partly loaded.
pub fn load(path: &Path) -> Result<(Vocabulary, Matcher, SnapshotInfo)> {
    let mut file = File::open(path).map_err(|e| io(path, "opening", e))?;
    let header = read_header(path, &mut file)?;
    let src = Source { path, file };
    let s = &header.sections;
    let (n, symbols) = (header.patterns, header.symbols);
    let last = |ends: &[u64]| ends.last().copied().unwrap_or(0);

    let vocab_ids: Vec<u32> = src.array(&s[0], symbols)?;
    let vocab_ends: Vec<u64> = src.array(&s[1], symbols)?;
    let vocab_text = String::from_utf8(src.array(&s[2], last(&vocab_ends))?)
        .map_err(|_| corrupt(path, "symbols are not valid UTF-8"))?;
    let vocab = Vocabulary::from_parts(&vocab_ids, &cut(path, &vocab_text, &vocab_ends, "symbol")?, header.next_id)
        .map_err(|e| corrupt(path, format!("vocabulary: {e}")))?;
    drop((vocab_ids, vocab_ends, vocab_text));

    // The names first: their text is held twice for a moment (file order and arena chunks),
    // while the other arrays are not yet there, so the peak stays under the matcher's size.
    let name_ends: Vec<u64> = src.array(&s[3], n)?;
    let name_text: Vec<u8> = src.array(&s[4], last(&name_ends))?;
    let names = NameSnapshot::from_text(&name_text, &name_ends).map_err(|e| corrupt(path, e))?;
    drop((name_text, name_ends));

    let offsets: Vec<u64> = src.array(&s[5], n.saturating_add(1))?;
    let tokens = match header.token_width {
        2 => TokenColumn::Narrow(src.array(&s[6], header.tokens)?),
        4 => TokenColumn::Wide(src.array(&s[6], header.tokens)?),
        w => return Err(corrupt(path, format!("token width {w}"))),
    };
    let event_offsets: Vec<u64> = src.array(&s[7], n.saturating_add(1))?;
    let event_lens: Vec<u32> = src.array(&s[8], header.events)?;
    let ranked: Vec<u32> = src.array(&s[9], n)?;

    let metric = Metric::from_name(&header.metric, header.autojunk).map_err(|e| corrupt(path, e))?;
    let store =
        PatternStore::from_columns(tokens, offsets, names, event_lens, event_offsets).map_err(|e| corrupt(path, e))?;
    let bulk = header.bulk_patterns as usize;
    let matcher =
        Matcher::restore(metric, header.max_pattern_length, store, ranked, bulk).map_err(|e| corrupt(path, e))?;
    let info = SnapshotInfo {
        metric,
        max_pattern_length: header.max_pattern_length,
        patterns: n as usize,
        bulk_patterns: bulk,
        symbols: symbols as usize,
    };
    Ok((vocab, matcher, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kato_snapshot_{}_{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A matcher with both tiers and removals over a vocabulary of `symbols` (ids beyond u16
    /// when large), with its patterns by name.
    fn sample(rng: &mut Rng, metric: Metric, symbols: u32) -> (Vocabulary, Matcher) {
        let mut vocab = Vocabulary::new();
        let words: Vec<String> = (0..symbols).map(|i| format!("s{i}")).collect();
        vocab.push_all(&words.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let mut matcher = Matcher::new(metric);
        for k in 0..300 {
            let len = rng.below(12);
            let tokens: Vec<u32> = (0..len).map(|_| rng.below(symbols as usize) as u32).collect();
            let cut = if len > 1 { rng.below(len) as u32 } else { 0 };
            let events = if len > 1 { vec![cut, len as u32 - cut] } else { vec![len as u32] };
            matcher.insert_events(&format!("p{k}"), &tokens, &events).unwrap();
            if k == 150 {
                matcher.promote();
            }
            if k % 7 == 3 {
                matcher.remove(&format!("p{}", k / 2));
            }
        }
        (vocab, matcher)
    }

    fn assert_same(a: &Matcher, b: &Matcher, rng: &mut Rng, symbols: u32) {
        assert_eq!(a.tiers(), b.tiers());
        assert_eq!(a.pattern_names(), b.pattern_names());
        for name in a.pattern_names() {
            assert_eq!(a.pattern_events(&name), b.pattern_events(&name));
        }
        for _ in 0..50 {
            let state: Vec<u32> = (0..1 + rng.below(8)).map(|_| rng.below(symbols as usize) as u32).collect();
            let (x, y) = (a.query(&state, 0.0, None).unwrap(), b.query(&state, 0.0, None).unwrap());
            let names = |m: &Matcher, h: &crate::ordering::Matches| {
                h.slots.iter().map(|&s| m.name(s).to_string()).collect::<Vec<_>>()
            };
            assert_eq!(names(a, &x), names(b, &y));
            assert_eq!(
                x.similarities.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                y.similarities.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn snapshot_round_trips_both_metrics_both_widths() {
        let mut rng = Rng::new(7);
        let path = dir().join("round_trip.snap");
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }, Metric::Difflib { autojunk: true }] {
            for symbols in [40, 70_000] {
                let (vocab, matcher) = sample(&mut rng, metric, symbols);
                save(&path, &vocab, &matcher).unwrap();
                let (v2, mut m2, info) = load(&path).unwrap();
                assert_eq!(v2, vocab);
                assert_eq!(info.metric, metric);
                assert_same(&matcher, &m2, &mut rng, symbols);
                // Both go on alike: learning (names ranked among the loaded ones), removal,
                // promotion.
                let mut matcher = matcher;
                for k in 0..40 {
                    let tokens: Vec<u32> = (0..rng.below(6)).map(|_| rng.below(symbols as usize) as u32).collect();
                    let name = format!("p{}x", rng.below(400));
                    assert_eq!(matcher.insert(&name, &tokens), m2.insert(&name, &tokens));
                    let gone = format!("p{}", rng.below(300));
                    assert_eq!(matcher.remove(&gone), m2.remove(&gone));
                    if k == 20 {
                        assert_eq!(matcher.promote(), m2.promote());
                    }
                }
                assert_same(&matcher, &m2, &mut rng, symbols);
            }
        }
    }

    #[test]
    fn snapshot_refuses_damage() {
        let mut rng = Rng::new(8);
        let path = dir().join("damage.snap");
        let (vocab, matcher) = sample(&mut rng, Metric::Lcs, 100);
        save(&path, &vocab, &matcher).unwrap();
        let good = fs::read(&path).unwrap();
        let bad = dir().join("bad.snap");
        let refused = |bytes: &[u8]| {
            fs::write(&bad, bytes).unwrap();
            match load(&bad) {
                Err(KatoError::InvalidSnapshot(text)) => text,
                other => panic!("loaded a damaged file: {:?}", other.map(|r| r.2)),
            }
        };
        // Every byte position matters (sampled): a flipped bit anywhere is refused.
        for at in (0..good.len()).step_by(37).chain([8, good.len() - 1]) {
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            refused(&bytes);
        }
        for len in [0, 10, 64, 200, good.len() - 1] {
            assert!(refused(&good[..len]).contains("truncated"), "{len}");
        }
        let mut bytes = good.clone();
        bytes[8] = 3;
        assert!(refused(&bytes).contains("version 3 is not supported"));
        bytes[0] = b'X';
        assert!(refused(&bytes).contains("magic"));
    }

    /// Sections of several checksum blocks: read on every core, each block verified.
    #[test]
    fn snapshot_of_many_blocks_round_trips_and_refuses_a_changed_block() {
        let mut rng = Rng::new(9);
        let path = dir().join("blocks.snap");
        let mut vocab = Vocabulary::new();
        let words: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
        vocab.push_all(&words.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let mut matcher = Matcher::new(Metric::Lcs);
        for k in 0..200_000 {
            let tokens: Vec<u32> = (0..1 + rng.below(8)).map(|_| rng.below(300) as u32).collect();
            matcher.insert(&format!("PTRN|{:x}", rng.below(1 << 40) * 1000 + k), &tokens).unwrap();
            if k == 150_000 {
                matcher.promote();
            }
        }
        save(&path, &vocab, &matcher).unwrap();
        let (_, loaded, _) = load(&path).unwrap();
        assert_same(&matcher, &loaded, &mut rng, 300);

        let mut file = File::open(&path).unwrap();
        let header = read_header(&path, &mut file).unwrap();
        let good = fs::read(&path).unwrap();
        let bad = dir().join("bad_block.snap");
        let mut checked = 0;
        for section in header.sections.iter().filter(|s| s.blocks.as_ref().unwrap().len() > 1) {
            let mut bytes = good.clone();
            bytes[(section.offset + BLOCK as u64 + 5) as usize] ^= 1;
            fs::write(&bad, &bytes).unwrap();
            let text = match load(&bad) {
                Err(KatoError::InvalidSnapshot(text)) => text,
                other => panic!("loaded a damaged file: {:?}", other.map(|r| r.2)),
            };
            assert!(text.contains(&format!("checksum mismatch in section {}", section.name)), "{text}");
            checked += 1;
        }
        assert!(checked >= 3, "{checked} sections of several blocks");
    }

    /// Files of format 1 (one checksum per section) still load, and alike.
    #[test]
    fn snapshot_of_format_1_loads() {
        let mut rng = Rng::new(10);
        let path = dir().join("v1.snap");
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: true }] {
            for symbols in [40, 70_000] {
                let (vocab, matcher) = sample(&mut rng, metric, symbols);
                save_version(&path, &vocab, &matcher, 1).unwrap();
                assert_eq!(fs::read(&path).unwrap()[8], 1);
                let (v1, m1, _) = load(&path).unwrap();
                assert_eq!(v1, vocab);
                assert_same(&matcher, &m1, &mut rng, symbols);
            }
        }
        let good = fs::read(&path).unwrap();
        let bad = dir().join("bad_v1.snap");
        for at in (PRELUDE..good.len()).step_by(good.len() / 300) {
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            fs::write(&bad, &bytes).unwrap();
            assert!(matches!(load(&bad), Err(KatoError::InvalidSnapshot(_))), "{at}");
        }
    }

    /// Names a duplicate or an order that does not rank every pattern once.
    #[test]
    fn snapshot_refuses_a_duplicate_name_or_a_bad_ranking() {
        let store = |names: &[&str]| {
            let n = names.len();
            let mut text = Vec::new();
            let mut ends = Vec::new();
            for name in names {
                text.extend_from_slice(name.as_bytes());
                ends.push(text.len() as u64);
            }
            let names = NameSnapshot::from_text(&text, &ends).unwrap();
            PatternStore::from_columns(TokenColumn::Narrow(vec![]), vec![0; n + 1], names, vec![], vec![0; n + 1])
                .unwrap()
        };
        let text = "abcé".as_bytes();
        assert!(NameSnapshot::from_text(text, &[1, 3, 5]).is_ok());
        for ends in [&[1, 1, 5][..], &[0, 5], &[2, 1, 5], &[1, 4, 5], &[1, 3, 6], &[1, 3]] {
            let err = NameSnapshot::from_text(text, ends).err().unwrap();
            assert!(err.contains("bad name boundaries"), "{ends:?}: {err}");
        }
        let names: Vec<String> = (0..20_000).map(|k| format!("PTRN|{k:06}")).collect();
        let mut refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let ranked: Vec<u32> = (0..refs.len() as u32).collect();
        assert!(Matcher::restore(Metric::Lcs, None, store(&refs), ranked.clone(), 0).is_ok());
        let mut twice = ranked.clone();
        twice[7] = 8;
        let err = Matcher::restore(Metric::Lcs, None, store(&refs), twice, 0).err().unwrap();
        assert!(err.contains("does not rank every pattern once"), "{err}");
        let mut outside = ranked.clone();
        outside[7] = 20_000;
        assert!(Matcher::restore(Metric::Lcs, None, store(&refs), outside, 0).is_err());
        refs[12_345] = refs[3];
        let err = Matcher::restore(Metric::Lcs, None, store(&refs), ranked, 0).err().unwrap();
        assert!(err.contains("\"PTRN|000003\" appears twice"), "{err}");
    }

    #[test]
    fn snapshot_checksum_covers_every_word_and_the_length() {
        let bytes: Vec<u8> = (0..200u32).map(|i| (i * 31 % 251) as u8).collect();
        let base = checksum(&bytes);
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert_ne!(checksum(&b), base, "{at}");
        }
        assert_ne!(checksum(&bytes[..199]), checksum(&[&bytes[..199], &[0]].concat()));
        let mut streamed = Checksum::default();
        streamed.update(&bytes[..160]);
        assert_eq!(streamed.finish(&bytes[160..]), base);
    }

    #[test]
    fn snapshot_empty_matcher() {
        let path = dir().join("empty.snap");
        save(&path, &Vocabulary::new(), &Matcher::new(Metric::Lcs)).unwrap();
        let (v, m, _) = load(&path).unwrap();
        assert!(v.is_empty() && m.is_empty());
    }
}
