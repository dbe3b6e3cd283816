//! The tiered matcher core: one columnar store whose first `bulk_end` slots are the bulk tier and
//! whose tail is the recent tier (newly learned patterns). Promotion moves the boundary. Without a
//! GPU both tiers are scanned by one parallel loop over all cores; results are identical whichever
//! tier holds a pattern because both use the same metric code, formula and ordering.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use crate::device::{DeviceLink, DeviceMirror, DevicePart, DeviceStatus};
use crate::error::{KatoError, Result};
use crate::kpi::Kpis;
use crate::metrics::bound::{Needs, Selection, SymbolBound};
use crate::metrics::{self, Metric, PreparedQuery, Scorer, SimilarityRule};
use crate::name_index::NameIndex;
use crate::ordering::{Candidate, ClassTally, Matches, NameOrder, QueryPlan};
use crate::parallel::spread_over_cores;
use crate::store::{PatternStore, MAX_SYMBOL_ID};

/// Patterns per parallel work item.
const CHUNK: usize = 4096;

/// Pattern lengths below this have their [`QueryPlan::min_matches_within`] in a table per scan
/// thread; longer ones (rare) compute it per pattern.
const TABLED_LENGTHS: usize = 1024;

/// [`QueryPlan::min_matches_within`] of every pattern length below [`TABLED_LENGTHS`] (and the
/// longest stored), for the class bound it was built for: the bound changes a few times per
/// query, and a table lookup keeps the per-pattern loop free of branches.
#[derive(Default)]
struct NeededByLength {
    worst: Option<u32>,
    table: Vec<u32>,
}

impl NeededByLength {
    fn table(&mut self, plan: &QueryPlan, worst: u32) -> &[u32] {
        if self.worst != Some(worst) {
            let lengths = plan.dense_lengths().min(TABLED_LENGTHS);
            self.table.clear();
            self.table.extend((0..lengths).map(|len| plan.min_matches_within(plan.row(len), len, worst)));
            self.worst = Some(worst);
        }
        &self.table
    }
}

/// A scan thread's working memory, reused across its chunks.
struct ChunkScratch<S: Scorer> {
    scorer: S::Scratch,
    chosen: Selection,
    counts: Vec<u32>,
    by_length: NeededByLength,
    /// Which patterns of a chunk are live and among a query's candidates.
    masked: Vec<bool>,
    gate: BoundGate,
}

impl<S: Scorer> ChunkScratch<S> {
    fn new(query: &S) -> Self {
        ChunkScratch {
            scorer: query.new_scratch(),
            chosen: Selection::default(),
            counts: vec![0u32; CHUNK],
            by_length: NeededByLength::default(),
            masked: Vec::new(),
            gate: BoundGate::default(),
        }
    }
}

/// Whether a scan thread runs the [`SymbolBound`] before scoring a chunk. The bound costs a
/// small part of a scorer's time per pattern and pays off only when it drops most patterns:
/// when it kept nearly all of a chunk's (a low threshold and no limit, or a limit not yet
/// filled), the next [`BoundGate::REST`] chunks skip it, until the class bound tightens.
#[derive(Default)]
struct BoundGate {
    resting: u32,
    worst: u32,
}

impl BoundGate {
    const REST: u32 = 7;

    fn open(&mut self, worst: u32) -> bool {
        if worst != self.worst {
            (self.worst, self.resting) = (worst, 0);
        }
        if self.resting > 0 {
            self.resting -= 1;
            return false;
        }
        true
    }

    fn observe(&mut self, needed: &[u32], kept: usize) {
        let scored = needed.iter().filter(|&&n| n != metrics::SKIP).count();
        if 4 * kept > 3 * scored {
            self.resting = Self::REST;
        }
    }
}

/// Removed slots are reclaimed once they outnumber both this and the live patterns.
const COMPACT_MIN_DEAD: usize = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierCounts {
    pub bulk: usize,
    pub recent: usize,
}

pub struct Matcher {
    metric: Metric,
    store: PatternStore,
    order: NameOrder,
    bulk_end: usize,
    bulk_live: usize,
    index: NameIndex,
    /// The GPU mirror of the bulk tier, when one is attached.
    device: DeviceLink,
    /// Bumped whenever slots are renumbered (compaction, clear), so a promotion prepared before
    /// knows it must start over.
    generation: u64,
    kpis: Kpis,
    listener: Option<Arc<dyn LearnListener>>,
    last_promotion: SystemTime,
    /// Longest pattern learned and longest state queried; `None` = unlimited.
    max_pattern_length: Option<usize>,
    logging: Logging,
}

/// What the matcher logs besides warnings (`GPUConfig.log_memory_usage`, `log_kernel_timing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logging {
    /// The store's and the device's memory after every promotion (INFO).
    pub memory: bool,
    /// The device part of every query that used the GPU, timed (INFO).
    pub kernel_timing: bool,
}

/// Pattern names a query is restricted to (KATO's filter pipeline output), held as one string so
/// that a binding can hand over many names without an allocation per name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CandidateNames {
    text: String,
    ends: Vec<usize>,
}

impl CandidateNames {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.text[start..end])
    }
}

impl<'a> FromIterator<&'a str> for CandidateNames {
    fn from_iter<I: IntoIterator<Item = &'a str>>(names: I) -> CandidateNames {
        let mut candidates = CandidateNames::default();
        for name in names {
            candidates.text.push_str(name);
            candidates.ends.push(candidates.text.len());
        }
        candidates
    }
}

/// How [`Matcher::query_with`] chooses and scores patterns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryOptions {
    /// Only these patterns may be returned (`None`: every pattern). Names not stored are ignored.
    pub candidates: Option<CandidateNames>,
    pub rule: SimilarityRule,
}

/// A query's plan and its prepared scorer: what the CPU needs to score any range of slots.
struct PendingQuery {
    plan: QueryPlan,
    prepared: PreparedQuery,
    bound: SymbolBound,
}

impl PendingQuery {
    fn new(matcher: &Matcher, state: &[u32], threshold: f64, rule: SimilarityRule) -> PendingQuery {
        PendingQuery {
            plan: QueryPlan::with_rule(state.len(), threshold, matcher.store.lengths(), rule),
            prepared: matcher.metric.prepare(state),
            bound: SymbolBound::new(state),
        }
    }

    /// The candidates of `slots` on the CPU (see [`Matcher::scan`]).
    fn scan(
        &self,
        matcher: &Matcher,
        limit: Option<usize>,
        slots: std::ops::Range<usize>,
        mask: Option<&SlotMask>,
    ) -> Vec<Vec<Candidate>> {
        match &self.prepared {
            PreparedQuery::Difflib(q) => matcher.scan(q, &self.plan, &self.bound, limit, slots, mask),
            PreparedQuery::Lcs(q) => matcher.scan(q, &self.plan, &self.bound, limit, slots, mask),
        }
    }
}

impl QueryOptions {
    /// Restricts the query to the patterns named (resolved under the query's own lock).
    pub fn with_candidates<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> QueryOptions {
        self.candidates = Some(names.into_iter().collect());
        self
    }

    pub fn with_rule(mut self, rule: SimilarityRule) -> QueryOptions {
        self.rule = rule;
        self
    }
}

/// One bit per slot: whether a query may return that slot.
pub(crate) struct SlotMask(Vec<u64>);

impl SlotMask {
    /// A mask of `slots` over a store of `capacity` slots.
    pub(crate) fn from_slots(capacity: usize, slots: impl IntoIterator<Item = u32>) -> SlotMask {
        let mut words = vec![0u64; capacity.div_ceil(64)];
        for slot in slots {
            words[slot as usize / 64] |= 1 << (slot % 64);
        }
        SlotMask(words)
    }

    #[inline]
    pub(crate) fn contains(&self, slot: u32) -> bool {
        self.0.get(slot as usize / 64).is_some_and(|word| word >> (slot % 64) & 1 == 1)
    }

    /// Whether no slot of `range` is in the mask.
    fn none_in(&self, range: std::ops::Range<usize>) -> bool {
        if range.is_empty() {
            return true;
        }
        let (first, last) = (range.start / 64, (range.end - 1) / 64);
        (first..=last).all(|w| {
            let mut word = self.0.get(w).copied().unwrap_or(0);
            if w == first {
                word &= u64::MAX << (range.start % 64);
            }
            if w == last && !range.end.is_multiple_of(64) {
                word &= u64::MAX >> (64 - range.end % 64);
            }
            word == 0
        })
    }
}

/// A matcher shared between Python threads and the sync worker.
pub type SharedMatcher = Arc<std::sync::RwLock<Matcher>>;

/// Told about learning, so a sync manager can promote once the recent tier is large enough.
/// Called with the matcher's write lock held: implementations must only record and signal.
pub trait LearnListener: Send + Sync {
    fn learned(&self, recent_patterns: usize);
    /// The matcher is going away.
    fn closed(&self);
}

/// A promotion prepared without exclusive access (see [`Matcher::plan_promotion`]).
pub struct PromotionPlan {
    slots: usize,
    generation: u64,
    /// A re-ranked name order, when enough names were added since the last one.
    order: Option<NameOrder>,
    started: Instant,
}

impl Drop for Matcher {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.closed();
        }
    }
}

/// Converts a vocabulary lookup (negative = symbol unknown to the vocabulary) into query symbol
/// ids. Each distinct unknown position gets its own id above [`MAX_SYMBOL_ID`]: it counts in the
/// state's length but matches no stored symbol.
pub fn query_from_lookup(ids: &[i64]) -> Vec<u32> {
    let mut next_unknown = u32::MAX;
    ids.iter()
        .map(|&id| {
            if (0..=MAX_SYMBOL_ID as i64).contains(&id) {
                id as u32
            } else {
                next_unknown -= 1;
                next_unknown + 1
            }
        })
        .collect()
}

/// `offsets` must have `count + 1` non-decreasing entries from 0 to `total`.
fn check_offsets(what: &str, count: usize, offsets: &[u64], total: usize) -> Result<()> {
    if offsets.len() != count + 1 {
        return Err(KatoError::InvalidLayout(format!(
            "{what} must have len(names) + 1 = {} entries, got {}",
            count + 1,
            offsets.len()
        )));
    }
    if offsets[0] != 0 || offsets[offsets.len() - 1] != total as u64 {
        return Err(KatoError::InvalidLayout(format!(
            "{what} must start at 0 and end at {total}, got {} .. {}",
            offsets[0],
            offsets[offsets.len() - 1]
        )));
    }
    if let Some(k) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(KatoError::InvalidLayout(format!("{what} decrease at index {}", k + 1)));
    }
    Ok(())
}

/// Event lengths must add up to the pattern's length.
fn check_events(len: usize, event_lens: &[u32]) -> Result<()> {
    let total: u64 = event_lens.iter().map(|&l| u64::from(l)).sum();
    if total != len as u64 {
        return Err(KatoError::InvalidLayout(format!("events of {total} symbols in all for a pattern of {len}")));
    }
    Ok(())
}

fn check_symbols(tokens: &[u32]) -> Result<()> {
    match tokens.iter().find(|&&t| t > MAX_SYMBOL_ID) {
        Some(&t) => Err(KatoError::SymbolIdOutOfRange(t as i64)),
        None => Ok(()),
    }
}

impl Matcher {
    pub fn new(metric: Metric) -> Matcher {
        Matcher {
            metric,
            store: PatternStore::new(),
            order: NameOrder::default(),
            bulk_end: 0,
            bulk_live: 0,
            index: NameIndex::default(),
            device: DeviceLink::default(),
            generation: 0,
            kpis: Kpis::default(),
            listener: None,
            last_promotion: SystemTime::now(),
            max_pattern_length: None,
            logging: Logging::default(),
        }
    }

    /// A matcher holding `store` (every slot live; the first `bulk` in the bulk tier) with the
    /// name order `ranked` (every slot, in name order): a loaded snapshot. The text names the
    /// problem if they do not form one.
    pub(crate) fn restore(
        metric: Metric,
        max_pattern_length: Option<usize>,
        store: PatternStore,
        ranked: Vec<u32>,
        bulk: usize,
    ) -> std::result::Result<Matcher, String> {
        let n = store.slots();
        if bulk > n || n as u64 >= u64::from(u32::MAX) {
            return Err(format!("{bulk} bulk patterns of {n}"));
        }
        let index =
            NameIndex::build(&store).map_err(|slot| format!("pattern name {:?} appears twice", store.name(slot)))?;
        let order = NameOrder::from_ranked(&store, ranked).ok_or("the name order does not rank every pattern once")?;
        let mut matcher = Matcher::with_max_pattern_length(metric, max_pattern_length);
        (matcher.store, matcher.order, matcher.index, matcher.bulk_end, matcher.bulk_live) =
            (store, order, index, bulk, bulk);
        Ok(matcher)
    }

    /// A matcher that refuses patterns and states longer than `max_pattern_length`.
    pub fn with_max_pattern_length(metric: Metric, max_pattern_length: Option<usize>) -> Matcher {
        let mut matcher = Matcher::new(metric);
        matcher.max_pattern_length = max_pattern_length;
        matcher
    }

    pub fn max_pattern_length(&self) -> Option<usize> {
        self.max_pattern_length
    }

    /// Applies to later learning and queries; patterns already stored stay.
    pub fn set_max_pattern_length(&mut self, max_pattern_length: Option<usize>) {
        self.max_pattern_length = max_pattern_length;
    }

    pub fn set_logging(&mut self, logging: Logging) {
        self.logging = logging;
    }

    fn check_pattern_len(&self, len: usize) -> Result<()> {
        match self.max_pattern_length {
            Some(max) if len > max => Err(KatoError::PatternTooLong { len, max }),
            _ => Ok(()),
        }
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn len(&self) -> usize {
        self.store.live_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains(name, &self.store)
    }

    /// The name of every stored pattern, in slot order.
    pub fn pattern_names(&self) -> Vec<String> {
        (0..self.store.slots() as u32)
            .filter(|&s| self.store.is_live(s))
            .map(|s| self.store.name(s).to_owned())
            .collect()
    }

    /// Slots below this are the bulk tier (live or removed).
    pub(crate) fn bulk_end(&self) -> usize {
        self.bulk_end
    }

    pub fn tiers(&self) -> TierCounts {
        TierCounts { bulk: self.bulk_live, recent: self.store.live_count() - self.bulk_live }
    }

    /// The stored symbols of a pattern.
    pub fn pattern(&self, name: &str) -> Option<std::borrow::Cow<'_, [u32]>> {
        self.index.get(name, &self.store).map(|slot| self.store.tokens(slot))
    }

    /// The stored symbols of the pattern in `slot`.
    pub fn tokens(&self, slot: u32) -> std::borrow::Cow<'_, [u32]> {
        self.store.tokens(slot)
    }

    /// The stored symbols of a pattern and the lengths of its events.
    pub fn pattern_events(&self, name: &str) -> Option<(std::borrow::Cow<'_, [u32]>, &[u32])> {
        self.index.get(name, &self.store).map(|slot| (self.store.tokens(slot), self.store.event_lens(slot)))
    }

    /// The lengths of the events of the pattern in `slot`.
    pub fn event_lens(&self, slot: u32) -> &[u32] {
        self.store.event_lens(slot)
    }

    /// The store and its name order, for the KATO record paths (`crate::kato_record`), which
    /// read them under the caller's lock.
    pub(crate) fn store_and_order(&self) -> (&PatternStore, &NameOrder) {
        (&self.store, &self.order)
    }

    /// The checks every query makes before it scores anything.
    pub(crate) fn check_query(&self, state_len: usize, threshold: f64, rule: SimilarityRule) -> Result<()> {
        metrics::validate_threshold(threshold)?;
        self.check_state_len(state_len)?;
        rule.check(self.metric)
    }

    pub fn name(&self, slot: u32) -> &str {
        self.store.name(slot)
    }

    /// The names of every current slot, kept alive independently of later changes.
    pub fn names(&self) -> crate::store::NameSnapshot {
        self.store.names()
    }

    /// Adds one pattern (one event) to the recent tier. `Ok(false)` when the name is already
    /// stored.
    pub fn insert(&mut self, name: &str, tokens: &[u32]) -> Result<bool> {
        self.insert_events(name, tokens, &[tokens.len() as u32])
    }

    /// Adds one pattern made of events of `event_lens` symbols (summing to `tokens.len()`) to
    /// the recent tier. `Ok(false)` when the name is already stored.
    pub fn insert_events(&mut self, name: &str, tokens: &[u32], event_lens: &[u32]) -> Result<bool> {
        check_events(tokens.len(), event_lens)?;
        if name.is_empty() {
            return Err(KatoError::EmptyName);
        }
        check_symbols(tokens)?;
        self.check_pattern_len(tokens.len())?;
        if self.index.contains(name, &self.store) {
            return Ok(false);
        }
        self.check_capacity(1, tokens.len())?;
        let slot = self.store.push_events(name, tokens, event_lens);
        self.order.push(&self.store, name);
        self.index.insert(name, slot);
        self.learned(1);
        Ok(true)
    }

    /// Adds many patterns to the recent tier, all or none: pattern `k` is
    /// `tokens[offsets[k]..offsets[k + 1]]`. Every name must be new and appear once.
    pub fn insert_batch(&mut self, names: &[&str], tokens: &[u32], offsets: &[u64]) -> Result<usize> {
        self.insert_batch_with(names, tokens, offsets, None)
    }

    /// [`Matcher::insert_batch`] with events: pattern `k` is made of the events of
    /// `event_lens[event_offsets[k]..event_offsets[k + 1]]` symbols, which sum to its length.
    pub fn insert_batch_events(
        &mut self,
        names: &[&str],
        tokens: &[u32],
        offsets: &[u64],
        event_lens: &[u32],
        event_offsets: &[u64],
    ) -> Result<usize> {
        check_offsets("event_offsets", names.len(), event_offsets, event_lens.len())?;
        for k in 0..names.len() {
            let events = &event_lens[event_offsets[k] as usize..event_offsets[k + 1] as usize];
            // Pattern offsets are checked by `insert_batch_with`; a bad one only makes this
            // length wrong, and the error is then about the layout either way.
            let len = offsets.get(k + 1).zip(offsets.get(k)).map_or(0, |(hi, lo)| hi.saturating_sub(*lo)) as usize;
            check_events(len, events)?;
        }
        self.insert_batch_with(names, tokens, offsets, Some((event_lens, event_offsets)))
    }

    fn insert_batch_with(
        &mut self,
        names: &[&str],
        tokens: &[u32],
        offsets: &[u64],
        events: Option<(&[u32], &[u64])>,
    ) -> Result<usize> {
        check_offsets("offsets", names.len(), offsets, tokens.len())?;
        check_symbols(tokens)?;
        let lengths: Vec<usize> = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
        self.check_new_patterns(names, &lengths)?;
        self.store.reserve(names.len(), tokens.len());
        self.index.reserve(names.len());
        self.order.reserve(names.len());
        for (k, &name) in names.iter().enumerate() {
            let pattern = &tokens[offsets[k] as usize..offsets[k + 1] as usize];
            let slot = match events {
                Some((lens, at)) => self.store.push_events(name, pattern, &lens[at[k] as usize..at[k + 1] as usize]),
                None => self.store.push(name, pattern),
            };
            self.order.push(&self.store, name);
            self.index.insert(name, slot);
        }
        self.learned(names.len());
        Ok(names.len())
    }

    /// Whether patterns of these names and lengths may be added, all of them: every name
    /// non-empty, given once and not stored, every length within `max_pattern_length`, room in
    /// the store. The one check before any learn (the bindings run it before interning symbols).
    pub fn check_new_patterns(&self, names: &[&str], lengths: &[usize]) -> Result<()> {
        if let Some(&longest) = lengths.iter().max() {
            self.check_pattern_len(longest)?;
        }
        let mut seen = HashSet::with_capacity(names.len());
        for &name in names {
            if name.is_empty() {
                return Err(KatoError::EmptyName);
            }
            if !seen.insert(name) {
                return Err(KatoError::DuplicateInBatch(name.to_string()));
            }
            if self.index.contains(name, &self.store) {
                return Err(KatoError::AlreadyStored(name.to_string()));
            }
        }
        self.check_capacity(names.len(), lengths.iter().sum())
    }

    fn learned(&self, count: usize) {
        self.kpis.patterns_learned.fetch_add(count as u64, Relaxed);
        if let Some(listener) = &self.listener {
            listener.learned(self.tiers().recent);
        }
    }

    /// Registers the one listener told about learning (a sync manager).
    pub fn set_listener(&mut self, listener: Option<Arc<dyn LearnListener>>) {
        if let Some(old) = std::mem::replace(&mut self.listener, listener) {
            old.closed();
        }
    }

    pub fn kpis(&self) -> &Kpis {
        &self.kpis
    }

    /// When the last promotion happened (creation time before the first).
    pub fn last_promotion(&self) -> SystemTime {
        self.last_promotion
    }

    pub fn set_last_promotion(&mut self, at: SystemTime) {
        self.last_promotion = at;
    }

    /// Time since [`Matcher::last_promotion`] (zero if the clock went back).
    pub fn since_last_promotion(&self) -> Duration {
        self.last_promotion.elapsed().unwrap_or_default()
    }

    fn check_capacity(&self, patterns: usize, tokens: usize) -> Result<()> {
        // Slots are u32 with u32::MAX reserved; offsets are u64 so only the slot count is bounded.
        let max_slots = (u32::MAX - 1) as u64;
        if (self.store.slots() + patterns) as u64 > max_slots {
            return Err(KatoError::CapacityExceeded(max_slots, u64::MAX));
        }
        let _ = tokens;
        Ok(())
    }

    /// Removes a pattern from whichever tier holds it. `false` when no such pattern is stored.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(slot) = self.index.remove(name, &self.store) else { return false };
        self.store.kill(slot);
        if (slot as usize) < self.bulk_end {
            self.bulk_live -= 1;
        }
        // The device may mirror slots past the bulk tier (see `plan_promotion`).
        self.device.kill(slot as usize);
        let dead = self.store.slots() - self.store.live_count();
        if dead >= COMPACT_MIN_DEAD && dead > self.store.live_count() {
            self.compact();
        }
        true
    }

    fn compact(&mut self) {
        let old_bulk_end = self.bulk_end;
        let remap = self.store.compact();
        self.bulk_end = remap[..old_bulk_end].iter().filter(|&&s| s != u32::MAX).count();
        self.index.remap(&remap);
        self.order.remap(&remap);
        self.order.rebuild(&self.store);
        self.generation += 1;
        self.device.rebuild(&self.store, self.bulk_end);
    }

    /// Moves every recent pattern into the bulk tier; returns how many moved.
    pub fn promote(&mut self) -> usize {
        let plan = self.plan_promotion();
        self.apply_promotion(plan)
    }

    /// The expensive half of a promotion, done with shared access while queries run: ranks the
    /// names of every slot stored now and mirrors those slots on the device.
    pub fn plan_promotion(&self) -> PromotionPlan {
        let started = Instant::now();
        let slots = self.store.slots();
        let order = self.order.needs_rebuild().then(|| self.order.rebuilt(&self.store, slots));
        self.device.sync(&self.store, slots);
        PromotionPlan { slots, generation: self.generation, order, started }
    }

    /// The other half, with exclusive access: swaps the prepared order in and moves the tier
    /// boundary. Patterns learned since the plan get their keys in the new order and stay
    /// recent. If slots were renumbered in between, the promotion is redone here.
    ///
    /// Promotions may be planned concurrently and applied in any order, so the boundary only
    /// moves forward: a plan overtaken by a newer one (it covers fewer slots than the bulk tier
    /// already has) changes nothing, returns 0 and is not counted as a sync event, since the
    /// promotion that overtook it moved and counted its patterns. A plan that finds nothing new
    /// to move (an empty recent tier) still counts: a sync was asked for and ran.
    pub fn apply_promotion(&mut self, plan: PromotionPlan) -> usize {
        if plan.generation != self.generation {
            let fresh = self.plan_promotion();
            return self.apply_promotion(PromotionPlan { started: plan.started, ..fresh });
        }
        if plan.slots < self.bulk_end {
            return 0;
        }
        let moved = (self.bulk_end as u32..plan.slots as u32).filter(|&s| self.store.is_live(s)).count();
        if let Some(order) = plan.order {
            self.order = order;
            for slot in plan.slots as u32..self.store.slots() as u32 {
                self.order.push(&self.store, self.store.name(slot));
            }
        }
        self.bulk_end = plan.slots;
        self.bulk_live += moved;
        self.last_promotion = SystemTime::now();
        self.kpis.sync_events.fetch_add(1, Relaxed);
        self.kpis.sync_duration.observe(plan.started.elapsed());
        if self.logging.memory {
            let device = self.device.status().capacity.map_or(0, |c| c.used_bytes);
            log::info!(
                "after promotion: {} patterns, {} bytes in host memory, {device} bytes on the device",
                self.len(),
                self.memory_bytes()
            );
        }
        moved
    }

    /// Forgets every pattern; an attached device stays attached, empty.
    pub fn clear(&mut self) {
        let device = std::mem::take(&mut self.device);
        let listener = self.listener.take();
        let (generation, kpis) = (self.generation + 1, std::mem::take(&mut self.kpis));
        let logging = self.logging;
        *self = Matcher::with_max_pattern_length(self.metric, self.max_pattern_length);
        self.logging = logging;
        (self.device, self.listener, self.generation, self.kpis) = (device, listener, generation, kpis);
        self.device.rebuild(&self.store, 0);
    }

    /// Mirrors the bulk tier onto `tier` and scores it there from now on.
    pub fn attach_device(&mut self, tier: Box<dyn DeviceMirror>, fallback_to_cpu: bool) {
        self.device.attach(tier, fallback_to_cpu, &self.store, self.bulk_end);
    }

    pub fn device_status(&self) -> DeviceStatus {
        self.device.status()
    }

    /// Device failures by kind.
    pub fn device_errors(&self) -> std::collections::BTreeMap<String, u64> {
        self.device.errors()
    }

    /// Test hook: the next query's device part fails (see [`DeviceLink::simulate_failure`]).
    pub fn simulate_device_failure(&self) {
        self.device.simulate_failure();
    }

    /// Every stored pattern whose similarity to `state` is `>= threshold`, in result order,
    /// at most `limit` of them.
    pub fn query(&self, state: &[u32], threshold: f64, limit: Option<usize>) -> Result<Matches> {
        self.query_with(state, threshold, limit, &QueryOptions::default())
    }

    /// [`Matcher::query`] restricted to `options.candidates` (the limit counts only candidates)
    /// and scored by `options.rule` (threshold, order and reported similarity).
    pub fn query_with(
        &self,
        state: &[u32],
        threshold: f64,
        limit: Option<usize>,
        options: &QueryOptions,
    ) -> Result<Matches> {
        metrics::validate_threshold(threshold)?;
        self.check_state_len(state.len())?;
        options.rule.check(self.metric)?;
        let started = Instant::now();
        let mask = options.candidates.as_ref().map(|names| self.candidate_mask(names));
        let query = PendingQuery::new(self, state, threshold, options.rule);
        // The device keeps the best classes holding `limit` of its patterns (classes follow
        // `options.rule`); with candidates that selection could drop patterns this query returns.
        let device_limit = if mask.is_none() { limit } else { None };
        // The device scores slots [0, on_device) while the CPU scans the rest; should the device
        // not answer (a state too long for it, a failure), the CPU scans its part afterwards.
        let on_device = self.device.mirrored();
        let mask = mask.as_ref();
        let ask_device = || {
            let started = Instant::now();
            let device = self.device.query(self.metric, state, &query.plan, device_limit, on_device);
            (device, started.elapsed())
        };
        let scan = || query.scan(self, limit, on_device..self.store.slots(), mask);
        // With nothing on the device the calling thread scans, helped by the pool's threads.
        // (`rayon::join` called from outside the pool, from a Python thread, hands both halves to
        // pool threads and waits: two more thread wake-ups per query, and the scan's helpers then
        // often woke on the core of the thread that woke them, idling the other.)
        let ((device, device_time), parts) = match on_device {
            0 => (ask_device(), scan()),
            _ => rayon::join(ask_device, scan),
        };
        let device = device.map_err(KatoError::DeviceLost)?;
        Ok(self.finish_query(&query, device, device_time, parts, on_device, limit, mask, started))
    }

    /// The rest of a query once the device answered: the CPU scans what the device did not
    /// score, the parts are merged in result order, and the query is counted.
    #[allow(clippy::too_many_arguments)]
    fn finish_query(
        &self,
        query: &PendingQuery,
        device: DevicePart,
        device_time: std::time::Duration,
        mut parts: Vec<Vec<Candidate>>,
        on_device: usize,
        limit: Option<usize>,
        mask: Option<&SlotMask>,
        started: Instant,
    ) -> Matches {
        if self.logging.kernel_timing && device.cpu_from > 0 {
            log::info!(
                "device part of a query: {} patterns scored on the GPU in {:.3} ms",
                device.cpu_from,
                device_time.as_secs_f64() * 1e3
            );
        }
        if device.cpu_from < on_device {
            parts.extend(query.scan(self, limit, device.cpu_from..on_device, mask));
        }
        let mut from_device = device.candidates;
        if let Some(m) = mask {
            from_device.retain(|c| m.contains(c.slot));
        }
        parts.push(from_device);
        let hits = query.plan.finish(parts, limit, &self.store, &self.order);
        let histogram = if device.cpu_from > 0 { &self.kpis.gpu_query_duration } else { &self.kpis.cpu_query_duration };
        histogram.observe(started.elapsed());
        self.kpis.queries.fetch_add(1, Relaxed);
        self.kpis.patterns_matched.fetch_add(hits.len() as u64, Relaxed);
        hits
    }

    /// KATO's prediction info of each hit of a query (see
    /// [`crate::prediction::prediction_infos`]), reading the patterns under the caller's lock.
    pub fn prediction_infos(
        &self,
        hits: &Matches,
        request: &crate::prediction::PredictionRequest<'_>,
    ) -> Result<Vec<Option<crate::prediction::PredictionInfo>>> {
        crate::prediction::prediction_infos(hits.len(), |k| self.store.tokens(hits.slots[k]), request)
    }

    /// [`Matcher::query`] for many states. With a device tier the states are scored there
    /// together (see [`DeviceLink::query_batch`]) while the cores scan the rest for every
    /// state; without one, the states are spread over the cores.
    pub fn query_batch(&self, states: &[Vec<u32>], threshold: f64, limit: Option<usize>) -> Result<Vec<Matches>> {
        metrics::validate_threshold(threshold)?;
        // Refused before any state is scored, so a bad batch counts no query.
        if let Some(longest) = states.iter().map(Vec::len).max() {
            self.check_state_len(longest)?;
        }
        let on_device = self.device.mirrored();
        if on_device == 0 || states.len() < 2 {
            return states.par_iter().map(|state| self.query(state, threshold, limit)).collect();
        }
        let started = Instant::now();
        let queries: Vec<PendingQuery> =
            states.iter().map(|state| PendingQuery::new(self, state, threshold, SimilarityRule::default())).collect();
        let pairs: Vec<(&[u32], &QueryPlan)> = states.iter().zip(&queries).map(|(s, q)| (&s[..], &q.plan)).collect();
        let (device, scans) = rayon::join(
            || {
                let started = Instant::now();
                (self.device.query_batch(self.metric, &pairs, limit, on_device), started.elapsed())
            },
            || {
                queries
                    .par_iter()
                    .map(|query| query.scan(self, limit, on_device..self.store.slots(), None))
                    .collect::<Vec<_>>()
            },
        );
        let (device, device_time) = device;
        let device = device.map_err(KatoError::DeviceLost)?;
        Ok(queries
            .par_iter()
            .zip(device)
            .zip(scans)
            .map(|((query, part), parts)| {
                self.finish_query(query, part, device_time, parts, on_device, limit, None, started)
            })
            .collect())
    }

    fn check_state_len(&self, len: usize) -> Result<()> {
        match self.max_pattern_length {
            Some(max) if len > max => Err(KatoError::StateTooLong { len, max }),
            _ => Ok(()),
        }
    }

    /// The slot of the stored pattern `name`.
    pub(crate) fn slot_of(&self, name: &str) -> Option<u32> {
        self.index.get(name, &self.store)
    }

    /// The slots of the stored patterns among `names`.
    pub(crate) fn candidate_mask(&self, names: &CandidateNames) -> SlotMask {
        SlotMask::from_slots(self.store.slots(), names.iter().filter_map(|name| self.index.get(name, &self.store)))
    }

    /// Scores slots `from..` on the CPU (only those in `mask`, when given); one list of
    /// candidates per chunk of slots.
    fn scan<S: Scorer>(
        &self,
        query: &S,
        plan: &QueryPlan,
        bound: &SymbolBound,
        limit: Option<usize>,
        slots: std::ops::Range<usize>,
        mask: Option<&SlotMask>,
    ) -> Vec<Vec<Candidate>> {
        if slots.is_empty() {
            return Vec::new();
        }
        let (from, slots) = (slots.start, slots.end);
        // With a limit, the chunks share what they found: patterns that cannot reach the worst
        // class already holding `limit` patterns are not scored (they cannot be among the best
        // `limit`). Chunks finish in any order, but the bound only drops patterns no order could
        // return, so results do not depend on it.
        let tally = ClassTally::new(plan, limit);
        let chunks = from / CHUNK..slots.div_ceil(CHUNK);
        spread_over_cores(
            chunks,
            || ChunkScratch::new(query),
            |chunk_scratch, chunk| {
                let ChunkScratch { scorer, chosen, counts, by_length, masked, gate } = chunk_scratch;
                let first = (chunk * CHUNK).max(from) as u32;
                let end = ((chunk + 1) * CHUNK).min(slots);
                if mask.is_some_and(|m| m.none_in(first as usize..end)) {
                    return Vec::new();
                }
                let run = self.store.run(first, end - first as usize);
                let worst = tally.as_ref().map_or(ClassTally::NONE, ClassTally::worst);
                let live = self.store.live_run(first, run.len());
                let wanted = match mask {
                    None => live,
                    Some(m) => {
                        masked.clear();
                        masked.extend(live.iter().enumerate().map(|(k, &live)| live && m.contains(first + k as u32)));
                        &masked[..]
                    }
                };
                let need = Needs {
                    by_length: by_length.table(plan, worst),
                    longer: |len| plan.min_matches_within(plan.row(len), len, worst),
                    wanted,
                };
                let bounded = gate.open(worst);
                bound.select(run, bounded, need, chosen);
                let Selection { needed, kept, .. } = chosen;
                if bounded {
                    gate.observe(needed, kept.len());
                }
                if kept.is_empty() {
                    return Vec::new();
                }
                query.score_run(run, kept, needed, counts, scorer);
                let mut found = Vec::new();
                for &k in kept.iter() {
                    let (need, count) = (needed[k as usize], counts[k as usize]);
                    if count >= need {
                        found.push(plan.candidate(plan.row(run.pattern_len(k as usize)), count, first + k));
                    }
                }
                if let Some(tally) = &tally {
                    tally.add(&mut found);
                }
                found
            },
        )
    }

    /// Bytes held by the store and the name index (an estimate for the index).
    pub fn memory_bytes(&self) -> usize {
        self.store.memory_bytes() + self.order.memory_bytes() + self.index.memory_bytes()
    }

    pub fn token_count(&self) -> usize {
        self.store.token_count()
    }

    /// Reads every stored symbol once, split over the cores in the scan's chunks, `repeats`
    /// times: `(bytes read per pass, fastest pass in seconds)`. A scan reads these bytes and more
    /// (offsets, liveness), so `bytes / seconds` is the streaming limit a query approaches.
    pub fn stream_symbols(&self, repeats: usize) -> (usize, f64) {
        let bytes = self.store.token_count() * self.store.token_width();
        let chunks = self.store.slots().div_ceil(CHUNK);
        let read = |chunk: usize| {
            let first = chunk * CHUNK;
            match self.store.run(first as u32, CHUNK.min(self.store.slots() - first)) {
                crate::store::AnyRun::Narrow(run) => run.tokens().iter().fold(0u32, |a, &t| a.wrapping_add(t.into())),
                crate::store::AnyRun::Wide(run) => run.tokens().iter().fold(0u32, |a, &t| a.wrapping_add(t)),
            }
        };
        let mut fastest = f64::INFINITY;
        for _ in 0..repeats.max(1) {
            let started = Instant::now();
            let sum = (0..chunks).into_par_iter().map(read).reduce(|| 0, u32::wrapping_add);
            std::hint::black_box(sum);
            fastest = fastest.min(started.elapsed().as_secs_f64());
        }
        (bytes, fastest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{naive_lcs, Rng};

    fn oracle(
        patterns: &[(String, Vec<u32>)],
        metric: Metric,
        state: &[u32],
        threshold: f64,
        limit: Option<usize>,
    ) -> Vec<(String, f64)> {
        let mut all: Vec<(String, f64)> = patterns
            .iter()
            .map(|(n, p)| (n.clone(), metric.similarity(p, state)))
            .filter(|(_, s)| *s >= threshold)
            .collect();
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        if let Some(k) = limit {
            all.truncate(k);
        }
        all
    }

    #[test]
    fn matches_oracle_across_tiers_removals_and_compaction() {
        let mut rng = Rng::new(3);
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }, Metric::Difflib { autojunk: true }] {
            let mut m = Matcher::new(metric);
            let mut kept: Vec<(String, Vec<u32>)> = Vec::new();
            for i in 0..12_000 {
                let p = rng.sequence(if i % 97 == 0 { 260 } else { 20 }, 12);
                let name = format!("P{:05}", rng.below(100_000));
                if m.insert(&name, &p).unwrap() {
                    kept.push((name, p));
                }
                if i == 5000 {
                    m.promote();
                }
            }
            // Remove enough to force a compaction.
            let inserted = kept.len();
            kept.retain(|(n, _)| {
                if n.as_bytes()[5] % 3 != 0 {
                    assert!(m.remove(n));
                    assert!(!m.remove(n));
                    false
                } else {
                    true
                }
            });
            assert_eq!(m.len(), kept.len());
            assert!(m.store.slots() < inserted, "removing two thirds must have compacted the store");
            let mut names = m.pattern_names();
            names.sort_unstable();
            let mut expected: Vec<String> = kept.iter().map(|(n, _)| n.clone()).collect();
            expected.sort_unstable();
            assert_eq!(names, expected, "pattern_names lists the live patterns only");
            for q in 0..6 {
                let state = rng.sequence(if q == 5 { 240 } else { 25 }, 12);
                for (threshold, limit) in [(0.0, None), (0.3, Some(7)), (0.5, None), (0.9, Some(100))] {
                    let got: Vec<(String, f64)> = m
                        .query(&state, threshold, limit)
                        .unwrap()
                        .iter()
                        .map(|h| (m.name(h.slot).to_string(), h.similarity))
                        .collect();
                    assert_eq!(got, oracle(&kept, metric, &state, threshold, limit), "{metric:?} t={threshold}");
                }
            }
        }
    }

    /// The class bound of limited queries (chunks skip patterns that cannot reach the worst
    /// class the chunks scanned so far already filled): many chunks, lengths from 1 to 90 so the
    /// bound cuts by length, ties at the limit broken by name (the last class cut short), with
    /// and without candidates. Over 15 symbols the symbol bound drops little; over 700 (hash
    /// collisions in its set) it drops most patterns before they are scored.
    #[test]
    fn limited_queries_skip_only_what_cannot_be_returned() {
        let mut rng = Rng::new(15);
        for (metric, alphabet) in [
            (Metric::Lcs, 15),
            (Metric::Difflib { autojunk: false }, 15),
            (Metric::Lcs, 700),
            (Metric::Difflib { autojunk: false }, 700),
        ] {
            let mut m = Matcher::new(metric);
            let mut kept: Vec<(String, Vec<u32>)> = Vec::new();
            for i in 0..5 * CHUNK + 123 {
                let len = 1 + rng.below(if i % 5 == 0 { 90 } else { 30 });
                let p: Vec<u32> = (0..len).map(|_| rng.below(alphabet) as u32).collect();
                let name = format!("P{:06}", rng.below(1_000_000));
                if m.insert(&name, &p).unwrap() {
                    kept.push((name, p));
                }
            }
            m.promote();
            let some: HashSet<&str> = kept.iter().step_by(3).map(|(n, _)| n.as_str()).collect();
            for q in 0..8 {
                let state: Vec<u32> = (0..1 + rng.below(40)).map(|_| rng.below(alphabet) as u32).collect();
                let scored: Vec<(String, f64)> =
                    kept.iter().map(|(n, p)| (n.clone(), metric.similarity(p, &state))).collect();
                for limit in [1, 10, 100, 1000] {
                    for threshold in [0.0, 0.1, 0.6] {
                        for candidates in [None, Some(&some)] {
                            let mut want: Vec<(String, u64)> = scored
                                .iter()
                                .filter(|(n, s)| *s >= threshold && candidates.is_none_or(|c| c.contains(n.as_str())))
                                .map(|(n, s)| (n.clone(), s.to_bits()))
                                .collect();
                            want.sort_by(|a, b| {
                                f64::from_bits(b.1).total_cmp(&f64::from_bits(a.1)).then(a.0.cmp(&b.0))
                            });
                            want.truncate(limit);
                            let mut options = QueryOptions::default();
                            if let Some(c) = candidates {
                                options = options.with_candidates(c.iter().copied());
                            }
                            let got = named(&m, m.query_with(&state, threshold, Some(limit), &options).unwrap());
                            assert_eq!(got, want, "{metric:?} q {q} limit {limit} t {threshold}");
                        }
                    }
                }
            }
        }
    }

    /// `query_with`'s answer written out the slow way: naive LCS, the rule's formula spelled out
    /// here, candidates filtered, sorted by (similarity desc, name asc), truncated. Similarities
    /// as bits.
    fn brute_force(
        scored: &[(String, usize, usize)],
        threshold: f64,
        limit: Option<usize>,
        candidates: Option<&HashSet<&str>>,
        rule: SimilarityRule,
    ) -> Vec<(String, u64)> {
        let mut all: Vec<(String, f64)> = scored
            .iter()
            .filter(|(n, _, _)| candidates.is_none_or(|c| c.contains(n.as_str())))
            .map(|&(ref n, l, t)| {
                let (l, t) = (l as f64, t as f64);
                let similarity = match rule {
                    _ if t == 0.0 => (rule == SimilarityRule::Exact) as u8 as f64,
                    SimilarityRule::Exact => 2.0 * l / t,
                    SimilarityRule::KatoRounded => (2.0 * l / t * 100.0) / 100.0,
                };
                (n.clone(), similarity)
            })
            .filter(|(_, s)| *s >= threshold)
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(limit.unwrap_or(usize::MAX));
        all.into_iter().map(|(n, s)| (n, s.to_bits())).collect()
    }

    /// (name, naive LCS, total length) of every pattern against `state`.
    fn score_all(patterns: &[(String, Vec<u32>)], state: &[u32]) -> Vec<(String, usize, usize)> {
        patterns.iter().map(|(n, p)| (n.clone(), naive_lcs(p, state), p.len() + state.len())).collect()
    }

    fn named(m: &Matcher, hits: Matches) -> Vec<(String, u64)> {
        hits.iter().map(|h| (m.name(h.slot).to_string(), h.similarity.to_bits())).collect()
    }

    /// Thresholds on both sides of the values where KATO's rounding moves a similarity: the raw
    /// and the rounded value of such pairs, and their float neighbours.
    fn boundary_thresholds(scored: &[(String, usize, usize)]) -> Vec<f64> {
        let mut out = vec![0.0, 0.25, 0.5];
        for &(_, l, t) in scored {
            let (l, t) = (l as f64, t as f64);
            let (raw, rounded) = (2.0 * l / t, (2.0 * l / t * 100.0) / 100.0);
            if raw != rounded && raw > 0.0 && out.len() < 24 {
                let (below, above) = (f64::from_bits(raw.to_bits() - 1), f64::from_bits(raw.to_bits() + 1));
                out.extend([raw, rounded, below, above].into_iter().filter(|x| (0.0..=1.0).contains(x)));
            }
        }
        out
    }

    /// Candidates (stored, removed and unknown names) and both rules, with limits, against the
    /// brute force; some thresholds sit exactly on rounded values, where the two rules disagree.
    #[test]
    fn query_with_candidates_and_rules_matches_brute_force() {
        let mut rng = Rng::new(77);
        let mut m = Matcher::new(Metric::Lcs);
        let mut kept: Vec<(String, Vec<u32>)> = Vec::new();
        for i in 0..9000 {
            let p = rng.sequence(if i % 101 == 0 { 300 } else { 25 }, 9);
            let name = format!("P{:05}", rng.below(60_000));
            if m.insert(&name, &p).unwrap() {
                kept.push((name, p));
            }
            if i == 4000 {
                m.promote();
            }
        }
        let removed: Vec<String> = kept.iter().step_by(13).map(|(n, _)| n.clone()).collect();
        for name in &removed {
            assert!(m.remove(name));
        }
        kept.retain(|(n, _)| !removed.contains(n));
        let mut disagreements = 0;
        for q in 0..8 {
            let state = rng.sequence(if q == 7 { 120 } else { 30 }, 9);
            let mut names: Vec<&str> = kept.iter().filter(|_| rng.below(3) == 0).map(|(n, _)| n.as_str()).collect();
            names.extend(removed.iter().take(50).map(String::as_str));
            names.extend(["no-such-pattern", "", "P99999x"]);
            let chosen: HashSet<&str> = names.iter().copied().collect();
            let with_names = QueryOptions::default().with_candidates(names.iter().copied());
            let scored = score_all(&kept, &state);
            for threshold in boundary_thresholds(&scored) {
                for limit in [None, Some(0), Some(1), Some(7), Some(300)] {
                    for rule in [SimilarityRule::Exact, SimilarityRule::KatoRounded] {
                        for candidates in [None, Some(&chosen)] {
                            let options = match candidates {
                                Some(_) => with_names.clone().with_rule(rule),
                                None => QueryOptions::default().with_rule(rule),
                            };
                            let got = named(&m, m.query_with(&state, threshold, limit, &options).unwrap());
                            let want = brute_force(&scored, threshold, limit, candidates, rule);
                            assert_eq!(
                                got,
                                want,
                                "q {q} t {threshold:e} limit {limit:?} {rule:?} {}",
                                candidates.is_some()
                            );
                        }
                    }
                    let exact = brute_force(&scored, threshold, limit, None, SimilarityRule::Exact);
                    let rounded = brute_force(&scored, threshold, limit, None, SimilarityRule::KatoRounded);
                    disagreements += (exact != rounded) as usize;
                }
            }
        }
        assert!(disagreements > 0, "no threshold separated the two rules: the test would not see a mix-up");
    }

    #[test]
    fn rounding_needs_the_lcs_metric_and_candidates_may_be_empty() {
        let mut m = Matcher::new(Metric::Difflib { autojunk: false });
        m.insert("x", &[1, 2]).unwrap();
        let rounded = QueryOptions::default().with_rule(SimilarityRule::KatoRounded);
        assert_eq!(m.query_with(&[1], 0.0, None, &rounded), Err(KatoError::KatoRoundingNeedsLcs("difflib")));
        let none = QueryOptions::default().with_candidates([]);
        assert!(m.query_with(&[1], 0.0, None, &none).unwrap().is_empty());
        let x = QueryOptions::default().with_candidates(["x", "x", "y"]);
        assert_eq!(m.query_with(&[1], 0.0, None, &x).unwrap().len(), 1);
    }

    /// The device's pairs obey candidates and the rounding rule too (its own threshold and
    /// limit are exact-ratio ones, so the query must not hand it the caller's).
    #[cfg(feature = "kernel-emulation")]
    #[test]
    fn device_pairs_obey_candidates_and_rounding() {
        use crate::cuda::emulated::EmulatedBackend;
        use crate::cuda::tier::{DeviceTier, TierLimits};
        let limits = TierLimits { memory_usage_fraction: 0.6, growth_buffer_fraction: 0.2, force_max_patterns: None };
        let mut rng = Rng::new(5);
        let mut m = Matcher::new(Metric::Lcs);
        m.attach_device(Box::new(DeviceTier::new(EmulatedBackend::new(1 << 30), limits).unwrap()), false);
        let mut kept: Vec<(String, Vec<u32>)> = Vec::new();
        for i in 0..5000 {
            let name = format!("D{i:05}");
            let p = rng.sequence(25, 9);
            m.insert(&name, &p).unwrap();
            kept.push((name, p));
        }
        m.promote();
        assert!(m.device_status().gpu_queries == 0 && m.device_status().active);
        for q in 0..4 {
            let state = rng.sequence(30, 9);
            let names: Vec<&str> = kept.iter().filter(|_| rng.below(4) == 0).map(|(n, _)| n.as_str()).collect();
            let chosen: HashSet<&str> = names.iter().copied().collect();
            let scored = score_all(&kept, &state);
            for threshold in boundary_thresholds(&scored) {
                for limit in [None, Some(1), Some(20)] {
                    for rule in [SimilarityRule::Exact, SimilarityRule::KatoRounded] {
                        let all = QueryOptions::default().with_rule(rule);
                        let some = all.clone().with_candidates(names.iter().copied());
                        let got = named(&m, m.query_with(&state, threshold, limit, &all).unwrap());
                        assert_eq!(got, brute_force(&scored, threshold, limit, None, rule), "q {q} {rule:?}");
                        let got = named(&m, m.query_with(&state, threshold, limit, &some).unwrap());
                        let want = brute_force(&scored, threshold, limit, Some(&chosen), rule);
                        assert_eq!(got, want, "q {q} t {threshold:e} limit {limit:?} {rule:?} candidates");
                    }
                }
            }
        }
        assert!(m.device_status().gpu_queries > 0, "the device must have served these queries");
    }

    #[test]
    fn batch_insert_is_all_or_nothing() {
        let mut m = Matcher::new(Metric::Lcs);
        assert!(m.insert("a", &[1, 2]).unwrap());
        let before = m.len();
        assert!(matches!(m.insert_batch(&["b", "b"], &[1, 2], &[0, 1, 2]), Err(KatoError::DuplicateInBatch(_))));
        assert!(matches!(m.insert_batch(&["b", "a"], &[1, 2], &[0, 1, 2]), Err(KatoError::AlreadyStored(_))));
        assert!(matches!(m.insert_batch(&["b"], &[1, 2], &[0, 3]), Err(KatoError::InvalidLayout(_))));
        assert!(matches!(m.insert_batch(&["b", "c"], &[1, 2], &[0, 2, 1]), Err(KatoError::InvalidLayout(_))));
        assert!(matches!(m.insert_batch(&["b"], &[u32::MAX], &[0, 1]), Err(KatoError::SymbolIdOutOfRange(_))));
        assert_eq!(m.len(), before);
        assert_eq!(m.insert_batch(&["b", "c"], &[1, 2], &[0, 1, 2]).unwrap(), 2);
        assert_eq!(m.tiers(), TierCounts { bulk: 0, recent: 3 });
        assert_eq!(m.promote(), 3);
        assert_eq!(m.tiers(), TierCounts { bulk: 3, recent: 0 });
    }

    #[test]
    fn thresholds_are_validated_and_zero_includes_everything() {
        let mut m = Matcher::new(Metric::Difflib { autojunk: false });
        m.insert("x", &[5, 6]).unwrap();
        m.insert("y", &[]).unwrap();
        for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            assert!(m.query(&[1], bad, None).is_err());
        }
        assert_eq!(m.query(&[1], 0.0, None).unwrap().len(), 2);
        // Unknown symbols count in the length and match nothing.
        let state = query_from_lookup(&[-1, 5, -1]);
        let hits = m.query(&state, 0.0, None).unwrap();
        assert_eq!(hits.similarities[0], 2.0 * 1.0 / 5.0);
    }

    impl Matcher {
        /// Recounts the tier sizes from the store, independently of the running counters.
        fn recount(&self) -> TierCounts {
            let bulk = (0..self.bulk_end as u32).filter(|&s| self.store.is_live(s)).count();
            TierCounts { bulk, recent: self.store.live_count() - bulk }
        }
    }

    /// Regression: a plan prepared before a newer promotion and applied after it moved the
    /// boundary back, counted its patterns a second time and made `recent` underflow.
    #[test]
    fn a_stale_plan_never_moves_the_boundary_back() {
        let mut m = Matcher::new(Metric::Lcs);
        m.insert_batch(&["a", "b"], &[1, 2], &[0, 1, 2]).unwrap();
        let stale = m.plan_promotion();
        m.insert_batch(&["c", "d", "e"], &[3, 4, 5], &[0, 1, 2, 3]).unwrap();
        let newer = m.plan_promotion();
        assert_eq!(m.apply_promotion(newer), 5);
        let events = m.kpis().sync_events.load(Relaxed);
        assert_eq!(m.apply_promotion(stale), 0);
        assert_eq!(m.tiers(), TierCounts { bulk: 5, recent: 0 });
        assert_eq!(m.tiers(), m.recount());
        assert_eq!(m.kpis().sync_events.load(Relaxed), events, "an overtaken plan is not a sync event");
        // The names keep their order: queries still return every pattern, name-ordered on ties.
        let hits = m.query(&[9], 0.0, None).unwrap();
        let names: Vec<&str> = hits.iter().map(|h| m.name(h.slot)).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        // An empty promotion is still a sync.
        assert_eq!(m.promote(), 0);
        assert_eq!(m.kpis().sync_events.load(Relaxed), events + 1);
        assert_eq!(m.kpis().sync_duration.snapshot().count, events + 1);
    }

    /// Learners and promoters on real threads, planning under the read lock and applying under
    /// the write lock as the bindings and the sync worker do: every pattern is moved exactly
    /// once and the counters always agree with a recount.
    #[test]
    fn concurrent_learning_and_promotions_count_every_pattern_once() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::RwLock;
        let m: SharedMatcher = Arc::new(RwLock::new(Matcher::new(Metric::Lcs)));
        let moved = Arc::new(AtomicUsize::new(0));
        let (learners, per_learner) = (3, 3000);
        std::thread::scope(|scope| {
            for t in 0..learners {
                let m = &m;
                scope.spawn(move || {
                    for k in 0..per_learner {
                        m.write().unwrap().insert(&format!("L{t}-{k:05}"), &[k as u32 % 11, 1]).unwrap();
                    }
                });
            }
            for _ in 0..3 {
                let (m, moved) = (&m, &moved);
                scope.spawn(move || {
                    for _ in 0..400 {
                        let plan = m.read().unwrap().plan_promotion();
                        let mut w = m.write().unwrap();
                        moved.fetch_add(w.apply_promotion(plan), Relaxed);
                        let (tiers, recount) = (w.tiers(), w.recount());
                        assert_eq!(tiers, recount);
                        assert!(w.bulk_end <= w.store.slots());
                    }
                });
            }
        });
        let mut w = m.write().unwrap();
        moved.fetch_add(w.promote(), Relaxed);
        assert_eq!(moved.load(Relaxed), learners * per_learner);
        assert_eq!(w.tiers(), TierCounts { bulk: learners * per_learner, recent: 0 });
        let k = w.kpis();
        assert_eq!(k.sync_duration.snapshot().count, k.sync_events.load(Relaxed));
    }

    #[test]
    fn max_pattern_length_refuses_long_patterns_and_states_changing_nothing() {
        let mut m = Matcher::with_max_pattern_length(Metric::Difflib { autojunk: false }, Some(3));
        assert_eq!(m.max_pattern_length(), Some(3));
        assert!(m.insert("ok", &[1, 2, 3]).unwrap());
        assert_eq!(m.insert("long", &[1, 2, 3, 4]), Err(KatoError::PatternTooLong { len: 4, max: 3 }));
        assert_eq!(
            m.insert_batch(&["b", "c"], &[1, 2, 3, 4, 5], &[0, 1, 5]),
            Err(KatoError::PatternTooLong { len: 4, max: 3 })
        );
        assert_eq!((m.len(), m.contains("b"), m.kpis().patterns_learned.load(Relaxed)), (1, false, 1));
        assert_eq!(m.query(&[1, 2, 3, 4], 0.0, None).unwrap_err(), KatoError::StateTooLong { len: 4, max: 3 });
        let states = vec![vec![1], vec![1, 2, 3, 4]];
        assert_eq!(m.query_batch(&states, 0.0, None).unwrap_err(), KatoError::StateTooLong { len: 4, max: 3 });
        assert_eq!(m.kpis().queries.load(Relaxed), 0, "refused queries are not counted");
        assert_eq!(m.query(&[1, 2, 3], 0.0, None).unwrap().len(), 1);
        // The limit survives a clear; lifting it lets longer patterns in.
        m.clear();
        assert!(m.insert("long", &[1, 2, 3, 4]).is_err());
        m.set_max_pattern_length(None);
        assert!(m.insert("long", &[1, 2, 3, 4]).unwrap());
        assert_eq!(m.query(&[1, 2, 3, 4, 5], 0.0, None).unwrap().len(), 1);
    }

    #[test]
    fn every_query_of_a_batch_is_counted_once() {
        let mut m = Matcher::new(Metric::Lcs);
        m.insert("a", &[1]).unwrap();
        m.query(&[1], 0.5, None).unwrap();
        m.query_batch(&[vec![1], vec![2], vec![]], 0.5, None).unwrap();
        assert!(m.query(&[1], 2.0, None).is_err());
        assert_eq!(m.kpis().queries.load(Relaxed), 4);
    }
}
