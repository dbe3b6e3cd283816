//! The tiered matcher core: one columnar store whose first `bulk_end` slots are the bulk tier and
//! whose tail is the recent tier (newly learned patterns). Promotion moves the boundary. Without a
//! GPU both tiers are scanned by one parallel loop over all cores; results are identical whichever
//! tier holds a pattern because both use the same metric code, formula and ordering.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use crate::device::{DeviceLink, DeviceMirror, DeviceStatus};
use crate::error::{KatoError, Result};
use crate::kpi::Kpis;
use crate::metrics::{self, Metric, PreparedQuery, Scorer};
use crate::name_index::NameIndex;
use crate::ordering::{Candidate, LengthRow, Matches, NameOrder, QueryPlan};
use crate::store::{PatternStore, MAX_SYMBOL_ID};

/// Patterns per parallel work item.
const CHUNK: usize = 4096;

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
        }
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

    pub fn name(&self, slot: u32) -> &str {
        self.store.name(slot)
    }

    /// The names of every current slot, kept alive independently of later changes.
    pub fn names(&self) -> crate::store::NameSnapshot {
        self.store.names()
    }

    /// Adds one pattern to the recent tier. `Ok(false)` when the name is already stored.
    pub fn insert(&mut self, name: &str, tokens: &[u32]) -> Result<bool> {
        if name.is_empty() {
            return Err(KatoError::EmptyName);
        }
        check_symbols(tokens)?;
        self.check_pattern_len(tokens.len())?;
        if self.index.contains(name, &self.store) {
            return Ok(false);
        }
        self.check_capacity(1, tokens.len())?;
        let slot = self.store.push(name, tokens);
        self.order.push(&self.store, name);
        self.index.insert(name, slot);
        self.learned(1);
        Ok(true)
    }

    /// Adds many patterns to the recent tier, all or none: pattern `k` is
    /// `tokens[offsets[k]..offsets[k + 1]]`. Every name must be new and appear once.
    pub fn insert_batch(&mut self, names: &[&str], tokens: &[u32], offsets: &[u64]) -> Result<usize> {
        if offsets.len() != names.len() + 1 {
            return Err(KatoError::InvalidLayout(format!(
                "offsets must have len(names) + 1 = {} entries, got {}",
                names.len() + 1,
                offsets.len()
            )));
        }
        if offsets[0] != 0 || offsets[offsets.len() - 1] != tokens.len() as u64 {
            return Err(KatoError::InvalidLayout(format!(
                "offsets must start at 0 and end at len(tokens) = {}, got {} .. {}",
                tokens.len(),
                offsets[0],
                offsets[offsets.len() - 1]
            )));
        }
        if let Some(k) = offsets.windows(2).position(|w| w[0] > w[1]) {
            return Err(KatoError::InvalidLayout(format!("offsets decrease at index {}", k + 1)));
        }
        check_symbols(tokens)?;
        let lengths: Vec<usize> = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
        self.check_new_patterns(names, &lengths)?;
        self.store.reserve(names.len(), tokens.len());
        self.index.reserve(names.len());
        self.order.reserve(names.len());
        for (k, &name) in names.iter().enumerate() {
            let slot = self.store.push(name, &tokens[offsets[k] as usize..offsets[k + 1] as usize]);
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
        moved
    }

    /// Forgets every pattern; an attached device stays attached, empty.
    pub fn clear(&mut self) {
        let device = std::mem::take(&mut self.device);
        let listener = self.listener.take();
        let (generation, kpis) = (self.generation + 1, std::mem::take(&mut self.kpis));
        *self = Matcher::with_max_pattern_length(self.metric, self.max_pattern_length);
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
        metrics::validate_threshold(threshold)?;
        self.check_state_len(state.len())?;
        let started = Instant::now();
        let device = self.device.query(self.metric, state, threshold, limit).map_err(KatoError::DeviceLost)?;
        let plan = QueryPlan::new(state.len(), threshold, self.store.lengths());
        let mut parts = match self.metric.prepare(state) {
            PreparedQuery::Difflib(q) => self.scan(&q, &plan, limit, device.cpu_from),
            PreparedQuery::Lcs(q) => self.scan(&q, &plan, limit, device.cpu_from),
        };
        parts.push(
            device
                .pairs
                .iter()
                .filter_map(|&(slot, matches)| {
                    let row = plan.row(self.store.len_of(slot));
                    (matches >= row.min_matches).then(|| plan.candidate(row, matches, slot))
                })
                .collect(),
        );
        let hits = plan.finish(parts, limit, &self.store, &self.order);
        let histogram = if device.cpu_from > 0 { &self.kpis.gpu_query_duration } else { &self.kpis.cpu_query_duration };
        histogram.observe(started.elapsed());
        self.kpis.queries.fetch_add(1, Relaxed);
        self.kpis.patterns_matched.fetch_add(hits.len() as u64, Relaxed);
        Ok(hits)
    }

    /// [`Matcher::query`] for many states; states are spread over the cores.
    pub fn query_batch(&self, states: &[Vec<u32>], threshold: f64, limit: Option<usize>) -> Result<Vec<Matches>> {
        metrics::validate_threshold(threshold)?;
        // Refused before any state is scored, so a bad batch counts no query.
        if let Some(longest) = states.iter().map(Vec::len).max() {
            self.check_state_len(longest)?;
        }
        states.par_iter().map(|state| self.query(state, threshold, limit)).collect()
    }

    fn check_state_len(&self, len: usize) -> Result<()> {
        match self.max_pattern_length {
            Some(max) if len > max => Err(KatoError::StateTooLong { len, max }),
            _ => Ok(()),
        }
    }

    /// Scores slots `from..` on the CPU; one list of candidates per chunk of slots.
    fn scan<S: Scorer>(&self, query: &S, plan: &QueryPlan, limit: Option<usize>, from: usize) -> Vec<Vec<Candidate>> {
        let slots = self.store.slots();
        (from / CHUNK..slots.div_ceil(CHUNK))
            .into_par_iter()
            .map_init(
                || (query.new_scratch(), Vec::with_capacity(CHUNK), vec![0u32; CHUNK]),
                |(scratch, needed, counts), chunk| {
                    let first = (chunk * CHUNK).max(from) as u32;
                    let run = self.store.run(first, ((chunk + 1) * CHUNK).min(slots) - first as usize);
                    needed.clear();
                    needed.extend((0..run.len()).map(|k| {
                        if self.store.is_live(first + k as u32) {
                            plan.row(run.pattern_len(k)).min_matches
                        } else {
                            LengthRow::NONE
                        }
                    }));
                    query.score_run(run, needed, counts, scratch);
                    let mut found = Vec::with_capacity(run.len());
                    for (k, (&need, &count)) in needed.iter().zip(counts.iter()).enumerate() {
                        if need != LengthRow::NONE && count >= need {
                            found.push(plan.candidate(plan.row(run.pattern_len(k)), count, first + k as u32));
                        }
                    }
                    if let Some(k) = limit {
                        plan.keep_best(&mut found, k);
                    }
                    found
                },
            )
            .collect()
    }

    /// Bytes held by the store and the name index (an estimate for the index).
    pub fn memory_bytes(&self) -> usize {
        self.store.memory_bytes() + self.order.memory_bytes() + self.index.memory_bytes()
    }

    pub fn token_count(&self) -> usize {
        self.store.token_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

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
