//! Promotion of the recent tier into the bulk tier (CPU → GPU "sync"), on four triggers: the
//! recent tier reaching `threshold` patterns (automatic), every `interval` in the background,
//! the end of training mode, and on demand. Training mode pauses the automatic and background
//! triggers.
//!
//! The background worker is a Rust thread that never touches Python. It sleeps on a condition
//! variable (no polling): learning wakes it when the threshold is reached, the interval's
//! deadline otherwise. It stops when asked, when the manager is dropped, and when the matcher
//! goes away.
//!
//! A promotion ranks names and uploads to the device with shared access (queries run on), then
//! swaps the prepared order in under the write lock: queries wait for a pointer swap, not for
//! the work.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{KatoError, Result};
use crate::matcher::{LearnListener, Matcher, SharedMatcher};

/// A duration given in seconds by a user (configuration, Python): finite, non-negative and
/// representable, or [`KatoError::InvalidValue`] naming `what`.
pub fn duration_from_secs(secs: f64, what: &str) -> Result<Duration> {
    if secs.is_nan() || secs < 0.0 {
        return Err(KatoError::InvalidValue(format!("{what} must be a non-negative number of seconds, got {secs}")));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| KatoError::InvalidValue(format!("{what} of {secs} seconds is too large to represent")))
}

/// A point in time given as unix seconds by a user, validated as [`duration_from_secs`] and
/// representable as a [`SystemTime`].
pub fn unix_time(secs: f64) -> Result<SystemTime> {
    let since_epoch = duration_from_secs(secs, "a unix time")?;
    SystemTime::UNIX_EPOCH
        .checked_add(since_epoch)
        .ok_or_else(|| KatoError::InvalidValue(format!("unix time {secs} is too far in the future to represent")))
}

/// Any threshold and interval are accepted: a threshold no recent tier reaches and an interval
/// too long to reach in this process's lifetime both mean "never".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncSettings {
    /// Promote once the recent tier holds this many patterns.
    pub threshold: usize,
    /// Background promotion interval.
    pub interval: Duration,
    /// Whether the interval trigger is on.
    pub background: bool,
}

impl SyncSettings {
    /// The one rule for whether a promotion is due: the recent tier has reached the threshold,
    /// or the background trigger is on, the recent tier is not empty and the interval has passed
    /// since the last promotion. Training mode is the caller's concern.
    pub fn due(&self, matcher: &Matcher) -> bool {
        let recent = matcher.tiers().recent;
        recent >= self.threshold || (self.background && recent > 0 && matcher.since_last_promotion() >= self.interval)
    }
}

/// Counts every trigger that ran, including one that found nothing to move or was overtaken by
/// a concurrent promotion (the matcher's `sync_events` KPI counts only promotions applied).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncStats {
    pub total_syncs: u64,
    pub total_patterns_synced: u64,
    pub last_duration: Option<Duration>,
    pub last_time: Option<SystemTime>,
    pub last_source: Option<String>,
}

#[derive(Default)]
struct Signal {
    stop: bool,
    /// Learning reached the threshold since the worker last looked.
    pending: bool,
    /// The matcher was dropped.
    closed: bool,
    /// Settings or training mode changed: look again now.
    poked: bool,
}

struct Shared {
    matcher: Weak<RwLock<Matcher>>,
    settings: Mutex<SyncSettings>,
    training: AtomicBool,
    signal: Mutex<Signal>,
    wake: Condvar,
    stats: Mutex<SyncStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LearnListener for Shared {
    fn learned(&self, recent_patterns: usize) {
        if !self.training.load(Relaxed) && recent_patterns >= lock(&self.settings).threshold {
            lock(&self.signal).pending = true;
            self.wake.notify_all();
        }
    }

    fn closed(&self) {
        lock(&self.signal).closed = true;
        self.wake.notify_all();
    }
}

impl Shared {
    fn read(matcher: &SharedMatcher) -> std::sync::RwLockReadGuard<'_, Matcher> {
        matcher.read().unwrap_or_else(|e| e.into_inner())
    }

    fn check_needed(&self, source: &str) -> bool {
        if self.training.load(Relaxed) && source != "manual" {
            return false;
        }
        let Some(matcher) = self.matcher.upgrade() else { return false };
        let settings = *lock(&self.settings);
        let due = settings.due(&Self::read(&matcher));
        due
    }

    fn trigger(&self, source: &str) -> usize {
        let Some(matcher) = self.matcher.upgrade() else { return 0 };
        let started = Instant::now();
        let plan = Self::read(&matcher).plan_promotion();
        let moved = matcher.write().unwrap_or_else(|e| e.into_inner()).apply_promotion(plan);
        let elapsed = started.elapsed();
        let mut stats = lock(&self.stats);
        stats.total_syncs += 1;
        stats.total_patterns_synced += moved as u64;
        stats.last_duration = Some(elapsed);
        stats.last_time = Some(SystemTime::now());
        stats.last_source = Some(source.to_string());
        drop(stats);
        log::info!(
            "promoted {moved} patterns to the bulk tier in {:.1} ms (source: {source})",
            elapsed.as_secs_f64() * 1e3
        );
        moved
    }

    /// The worker: sleeps until learning reaches the threshold, the background deadline passes,
    /// or it is told to stop.
    fn run(self: Arc<Self>) {
        loop {
            // Read the matcher before taking the signal lock: learning signals while holding the
            // matcher's write lock, so holding the signal lock while waiting for the matcher
            // would deadlock.
            let settings = *lock(&self.settings);
            // An interval too long to add to now has no deadline: it never passes.
            let deadline = settings.background.then(|| {
                let since = self.matcher.upgrade().map(|m| Self::read(&m).since_last_promotion()).unwrap_or_default();
                Instant::now().checked_add(settings.interval.saturating_sub(since))
            });
            let mut signal = lock(&self.signal);
            while !signal.stop && !signal.closed && !signal.pending && !signal.poked {
                match deadline.flatten() {
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        signal = self.wake.wait_timeout(signal, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                    }
                    None => signal = self.wake.wait(signal).unwrap_or_else(|e| e.into_inner()),
                }
            }
            if signal.stop || signal.closed {
                return;
            }
            let automatic = std::mem::take(&mut signal.pending);
            if std::mem::take(&mut signal.poked) && !automatic {
                // New settings or training mode: promote if that is now due, then recompute the
                // deadline.
                drop(signal);
                if self.check_needed("automatic") {
                    self.trigger("automatic");
                }
                continue;
            }
            drop(signal);
            let source = if automatic { "automatic" } else { "background" };
            if self.check_needed(source) {
                self.trigger(source);
            } else if !automatic {
                // Nothing to promote at the deadline: wait a whole interval before looking again.
                if self.matcher.strong_count() == 0 {
                    return;
                }
                let idle = lock(&self.signal);
                let asleep = |s: &mut Signal| !s.stop && !s.closed && !s.pending;
                // Waiting "until never" is a plain wait.
                match Instant::now().checked_add(settings.interval) {
                    Some(_) => drop(self.wake.wait_timeout_while(idle, settings.interval, asleep)),
                    None => drop(self.wake.wait_while(idle, asleep)),
                }
            }
        }
    }
}

/// Promotes a matcher's recent tier on the four triggers (see the module documentation).
pub struct SyncManager {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl SyncManager {
    /// Registers with `matcher` to hear about learning (replacing any earlier manager's hook).
    pub fn new(matcher: &SharedMatcher, settings: SyncSettings) -> SyncManager {
        let shared = Arc::new(Shared {
            matcher: Arc::downgrade(matcher),
            settings: Mutex::new(settings),
            training: AtomicBool::new(false),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
            stats: Mutex::new(SyncStats::default()),
        });
        matcher.write().unwrap_or_else(|e| e.into_inner()).set_listener(Some(shared.clone()));
        SyncManager { shared, worker: Mutex::new(None) }
    }

    pub fn settings(&self) -> SyncSettings {
        *lock(&self.shared.settings)
    }

    /// New settings take effect at once: the worker re-reads them and promotes if that is due.
    pub fn configure(&self, settings: SyncSettings) {
        *lock(&self.shared.settings) = settings;
        self.poke();
    }

    fn poke(&self) {
        lock(&self.shared.signal).poked = true;
        self.shared.wake.notify_all();
    }

    /// Whether a promotion is due for a trigger of this source ("manual", "automatic",
    /// "background", "training"); in training mode only "manual" can be.
    pub fn check_needed(&self, source: &str) -> bool {
        self.shared.check_needed(source)
    }

    /// Promotes now; returns how many patterns moved.
    pub fn trigger(&self, source: &str) -> usize {
        self.shared.trigger(source)
    }

    /// Starts the worker; `false` when it is already running.
    pub fn start(&self) -> bool {
        let mut worker = lock(&self.worker);
        if worker.as_ref().is_some_and(|w| !w.is_finished()) {
            return false;
        }
        lock(&self.shared.signal).stop = false;
        let shared = self.shared.clone();
        *worker = Some(
            std::thread::Builder::new()
                .name("kato-gpu-sync".into())
                .spawn(move || shared.run())
                .expect("spawning the sync thread"),
        );
        true
    }

    /// Stops the worker and waits for it (at most one promotion in progress).
    pub fn stop(&self) {
        lock(&self.shared.signal).stop = true;
        self.shared.wake.notify_all();
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
    }

    pub fn is_running(&self) -> bool {
        lock(&self.worker).as_ref().is_some_and(|w| !w.is_finished())
    }

    pub fn training(&self) -> bool {
        self.shared.training.load(Relaxed)
    }

    /// Pauses the automatic and background triggers; `false` if already in training mode.
    pub fn enter_training(&self) -> bool {
        !self.shared.training.swap(true, Relaxed)
    }

    /// Resumes them; with `trigger`, promotes what training left in the recent tier. `None`
    /// if not in training mode.
    pub fn exit_training(&self, trigger: bool) -> Option<usize> {
        if !self.shared.training.swap(false, Relaxed) {
            return None;
        }
        self.poke();
        let Some(matcher) = self.shared.matcher.upgrade() else { return Some(0) };
        let recent = Shared::read(&matcher).tiers().recent;
        drop(matcher);
        Some(if trigger && recent > 0 { self.shared.trigger("training") } else { 0 })
    }

    pub fn stats(&self) -> SyncStats {
        lock(&self.shared.stats).clone()
    }
}

impl Drop for SyncManager {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    fn shared_matcher() -> SharedMatcher {
        Arc::new(RwLock::new(Matcher::new(Metric::Lcs)))
    }

    fn learn(m: &SharedMatcher, first: usize, count: usize) {
        let mut w = m.write().unwrap();
        for k in first..first + count {
            w.insert(&format!("P{k:06}"), &[k as u32 % 7, 1, 2]).unwrap();
        }
    }

    fn recent(m: &SharedMatcher) -> usize {
        m.read().unwrap().tiers().recent
    }

    fn wait_until(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    const SETTINGS: SyncSettings =
        SyncSettings { threshold: 100, interval: Duration::from_secs(3600), background: false };

    #[test]
    fn threshold_trigger_promotes_in_the_background() {
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SETTINGS);
        assert!(sync.start() && !sync.start());
        learn(&m, 0, 99);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(recent(&m), 99, "below the threshold nothing moves");
        learn(&m, 99, 1);
        assert!(wait_until(|| recent(&m) == 0));
        assert_eq!(m.read().unwrap().tiers().bulk, 100);
        let stats = sync.stats();
        assert_eq!(
            (stats.total_syncs, stats.total_patterns_synced, stats.last_source.as_deref()),
            (1, 100, Some("automatic"))
        );
        sync.stop();
        assert!(!sync.is_running());
    }

    #[test]
    fn interval_trigger_and_training_mode() {
        let m = shared_matcher();
        let sync = SyncManager::new(
            &m,
            SyncSettings { threshold: 1_000_000, interval: Duration::from_millis(100), background: true },
        );
        sync.start();
        assert!(sync.enter_training() && !sync.enter_training());
        learn(&m, 0, 10);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(recent(&m), 10, "training mode pauses the background trigger");
        assert!(!sync.check_needed("background") && sync.check_needed("manual"));
        assert_eq!(sync.exit_training(true), Some(10));
        assert_eq!(sync.stats().last_source.as_deref(), Some("training"));
        assert_eq!(sync.exit_training(true), None);
        learn(&m, 10, 5);
        assert!(wait_until(|| recent(&m) == 0), "the interval promotes without reaching the threshold");
        assert_eq!(sync.stats().last_source.as_deref(), Some("background"));
    }

    /// Regression: the worker once read the matcher while holding its signal lock, and learning
    /// signals while holding the matcher's write lock, so learning during the worker's deadline
    /// computation deadlocked.
    #[test]
    fn learning_while_the_worker_computes_its_deadline_does_not_deadlock() {
        let m = shared_matcher();
        let sync =
            SyncManager::new(&m, SyncSettings { threshold: 1, interval: Duration::from_millis(1), background: true });
        sync.start();
        let (done, finished) = std::sync::mpsc::channel();
        let learners: Vec<_> = (0..2)
            .map(|t| {
                let (m, done) = (m.clone(), done.clone());
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_millis(1500);
                    let mut k = t * 10_000_000;
                    while Instant::now() < until {
                        learn(&m, k, 1);
                        k += 1;
                    }
                    done.send(()).unwrap();
                })
            })
            .collect();
        for _ in 0..2 {
            if finished.recv_timeout(Duration::from_secs(60)).is_err() {
                // Dropping the manager would join the deadlocked worker and hang the test run.
                std::mem::forget(sync);
                panic!("learning deadlocked with the sync worker");
            }
        }
        for learner in learners {
            learner.join().unwrap();
        }
        assert!(wait_until(|| recent(&m) == 0));
        assert!(sync.stats().total_syncs > 0);
    }

    #[test]
    fn new_settings_take_effect_at_once() {
        let m = shared_matcher();
        let sync = SyncManager::new(
            &m,
            SyncSettings { threshold: 1000, interval: Duration::from_secs(3600), background: false },
        );
        sync.start();
        learn(&m, 0, 30);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(recent(&m), 30);
        // A threshold below what already waits promotes without further learning.
        sync.configure(SyncSettings { threshold: 10, ..sync.settings() });
        assert!(wait_until(|| recent(&m) == 0));
        // Switching the background trigger on starts its clock at once.
        learn(&m, 30, 2);
        sync.configure(SyncSettings { threshold: 1000, interval: Duration::from_millis(100), background: true });
        assert!(wait_until(|| recent(&m) == 0));
    }

    #[test]
    fn manual_trigger_and_worker_stops_when_the_matcher_goes() {
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SETTINGS);
        sync.start();
        learn(&m, 0, 3);
        assert_eq!(sync.trigger("manual"), 3);
        assert_eq!(sync.trigger("manual"), 0);
        drop(m);
        assert!(wait_until(|| !sync.is_running()), "the worker ends with the matcher");
        assert_eq!(sync.trigger("manual"), 0);
    }

    #[test]
    fn user_durations_and_times_are_validated_not_panicking() {
        assert_eq!(duration_from_secs(1.5, "x"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration_from_secs(0.0, "x"), Ok(Duration::ZERO));
        for bad in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, 1e20] {
            assert!(matches!(duration_from_secs(bad, "x"), Err(KatoError::InvalidValue(_))), "{bad}");
        }
        assert_eq!(unix_time(2.0), Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(2)));
        // Representable as a duration, not as a time.
        assert!(duration_from_secs(1e19, "x").is_ok());
        assert!(matches!(unix_time(1e19), Err(KatoError::InvalidValue(_))));
        assert!(matches!(unix_time(-3.0), Err(KatoError::InvalidValue(_))));
    }

    #[test]
    fn the_sync_needed_rule() {
        let m = shared_matcher();
        let due = |settings: SyncSettings| settings.due(&m.read().unwrap());
        let background = SyncSettings { threshold: usize::MAX, interval: Duration::ZERO, background: true };
        assert!(!due(background), "nothing recent, nothing due");
        learn(&m, 0, 3);
        assert!(due(background));
        assert!(!due(SyncSettings { background: false, ..background }));
        assert!(due(SyncSettings { threshold: 3, ..SETTINGS }));
        assert!(!due(SyncSettings { threshold: 4, ..SETTINGS }));
        assert!(!due(SyncSettings { interval: Duration::MAX, ..background }));
        // A last promotion in the future is "just now".
        m.write().unwrap().set_last_promotion(unix_time(1e12).unwrap());
        assert!(!due(SyncSettings { interval: Duration::from_secs(1), ..background }));
        m.write().unwrap().promote();
        assert!(!due(background));
    }

    /// Regression: an interval too long to add to `Instant::now()` panicked the worker thread.
    #[test]
    fn an_endless_interval_or_threshold_means_never_not_a_panic() {
        let m = shared_matcher();
        let settings = SyncSettings { threshold: usize::MAX, interval: Duration::MAX, background: true };
        let sync = SyncManager::new(&m, settings);
        assert!(sync.start());
        learn(&m, 0, 5);
        sync.configure(SyncSettings { interval: Duration::from_secs_f64(1e19), ..settings });
        assert!(!sync.check_needed("background"));
        assert_eq!(sync.trigger("manual"), 5);
        lock(&sync.shared.signal).stop = true;
        sync.shared.wake.notify_all();
        let worker = lock(&sync.worker).take().unwrap();
        assert!(worker.join().is_ok(), "the sync worker panicked");
    }
}
