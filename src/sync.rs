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
//! The worker is supervised: a failure (a panic anywhere in a promotion) is caught, logged,
//! counted in [`SyncStats`], and the worker restarts after a pause that doubles with each failure
//! in a row; after [`MAX_CONSECUTIVE_FAILURES`] in a row it stays stopped until started again.
//!
//! A promotion ranks names and uploads to the device with shared access (queries run on), then
//! swaps the prepared order in under the write lock: queries wait for a pointer swap, not for
//! the work.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{KatoError, Result};
use crate::fork;
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

/// The largest `sync_threshold`: a billion patterns waiting in the recent tier is already far
/// beyond any sensible setting (the recent tier is scanned by every query).
pub const MAX_SYNC_THRESHOLD: u64 = 1_000_000_000;

/// The longest `sync_interval_seconds`: a year. Turning the interval trigger off is
/// `background = false`, not an endless interval.
pub const MAX_SYNC_INTERVAL_SECONDS: u64 = 365 * 24 * 3600;

/// Failures in a row after which the supervised worker stays stopped.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;

/// The pause before the first restart; doubled for each further failure in a row.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);

/// Validated sync settings: [`SyncSettings::new`] is the one rule for their ranges, applied on
/// every path (the Python API, `GPUConfig.validate`, the HTTP endpoints), chosen so that the
/// worker handles every accepted value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncSettings {
    /// Promote once the recent tier holds this many patterns.
    threshold: usize,
    /// Background promotion interval.
    interval: Duration,
    /// Whether the interval trigger is on.
    background: bool,
}

/// What made a promotion due: the label recorded and logged with it.
pub const AUTOMATIC: &str = "automatic";
pub const BACKGROUND: &str = "background";
pub const TRAINING: &str = "training";
pub const MANUAL: &str = "manual";

impl SyncSettings {
    /// `threshold` in `1..=MAX_SYNC_THRESHOLD`; `interval_seconds` finite, positive and at most
    /// [`MAX_SYNC_INTERVAL_SECONDS`]; otherwise [`KatoError::InvalidValue`] naming the field.
    pub fn new(threshold: i128, interval_seconds: f64, background: bool) -> Result<SyncSettings> {
        if !(1..=i128::from(MAX_SYNC_THRESHOLD)).contains(&threshold) {
            return Err(KatoError::InvalidValue(format!(
                "sync_threshold must be an integer from 1 to {MAX_SYNC_THRESHOLD}, got {threshold}"
            )));
        }
        // NaN fails the comparison too.
        if !(interval_seconds > 0.0 && interval_seconds <= MAX_SYNC_INTERVAL_SECONDS as f64) {
            return Err(KatoError::InvalidValue(format!(
                "sync_interval_seconds must be a number of seconds above 0 and at most {MAX_SYNC_INTERVAL_SECONDS} \
                 (a year), got {interval_seconds}"
            )));
        }
        let threshold = usize::try_from(threshold).expect("at most MAX_SYNC_THRESHOLD");
        Ok(SyncSettings { threshold, interval: Duration::from_secs_f64(interval_seconds), background })
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn background(&self) -> bool {
        self.background
    }

    /// The one rule for whether a promotion is due, and why: the recent tier has reached the
    /// threshold ([`AUTOMATIC`]), or the background trigger is on, the recent tier is not empty
    /// and the interval has passed since the last promotion ([`BACKGROUND`]). Training mode is
    /// the caller's concern.
    pub fn due_trigger(&self, matcher: &Matcher) -> Option<&'static str> {
        let recent = matcher.tiers().recent;
        if recent >= self.threshold {
            Some(AUTOMATIC)
        } else if self.background && recent > 0 && matcher.since_last_promotion() >= self.interval {
            Some(BACKGROUND)
        } else {
            None
        }
    }

    pub fn due(&self, matcher: &Matcher) -> bool {
        self.due_trigger(matcher).is_some()
    }
}

/// Counts every trigger that ran, including one that found nothing to move or was overtaken by
/// a concurrent promotion (the matcher's `sync_events` KPI counts only promotions applied), and
/// the worker's failures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncStats {
    pub total_syncs: u64,
    pub total_patterns_synced: u64,
    pub last_duration: Option<Duration>,
    pub last_time: Option<SystemTime>,
    pub last_source: Option<String>,
    /// Times the worker failed (each caught, logged, and followed by a restart or a stop).
    pub worker_failures: u64,
    /// Times the supervisor restarted a failed worker.
    pub worker_restarts: u64,
    pub last_error: Option<String>,
    pub last_error_time: Option<SystemTime>,
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
    /// Failures still to simulate (see [`SyncManager::simulate_worker_failure`]).
    fail_next: AtomicU32,
    /// Wake cycles the worker completed: a failure after progress is not "in a row".
    cycles: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
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

    /// Why a promotion is due now, if it is: `None` in training mode or when nothing is due.
    fn due_trigger(&self) -> Option<&'static str> {
        if self.training.load(Relaxed) {
            return None;
        }
        let matcher = self.matcher.upgrade()?;
        let settings = *lock(&self.settings);
        let due = fork::run(|| settings.due_trigger(&Self::read(&matcher)));
        due
    }

    fn check_needed(&self, source: &str) -> bool {
        if self.training.load(Relaxed) && source != MANUAL {
            return false;
        }
        let Some(matcher) = self.matcher.upgrade() else { return false };
        let settings = *lock(&self.settings);
        let due = fork::run(|| settings.due(&Self::read(&matcher)));
        due
    }

    fn trigger(&self, source: &str) -> usize {
        let Some(matcher) = self.matcher.upgrade() else { return 0 };
        let started = Instant::now();
        let moved = fork::run(|| {
            let plan = Self::read(&matcher).plan_promotion();
            matcher.write().unwrap_or_else(|e| e.into_inner()).apply_promotion(plan)
        });
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

    /// Sleeps up to `pause` unless told to stop; `false` when told to stop or the matcher went.
    fn pause(&self, pause: Duration) -> bool {
        let signal = lock(&self.signal);
        let (signal, _) =
            self.wake.wait_timeout_while(signal, pause, |s| !s.stop && !s.closed).unwrap_or_else(|e| e.into_inner());
        !signal.stop && !signal.closed
    }

    /// The worker's thread: runs [`Shared::run`], restarting it after a failure (see the module
    /// documentation).
    fn supervise(self: Arc<Self>) {
        let mut in_a_row = 0u32;
        loop {
            let cycles = self.cycles.load(Relaxed);
            let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.run())) else { return };
            if self.cycles.load(Relaxed) != cycles {
                in_a_row = 0;
            }
            in_a_row += 1;
            let message = panic_message(payload.as_ref());
            let give_up = in_a_row >= MAX_CONSECUTIVE_FAILURES;
            {
                let mut stats = lock(&self.stats);
                stats.worker_failures += 1;
                stats.worker_restarts += u64::from(!give_up);
                stats.last_error = Some(message.clone());
                stats.last_error_time = Some(SystemTime::now());
            }
            if give_up {
                log::error!(
                    "the sync worker failed {in_a_row} times in a row and is stopped (last error: {message}); \
                     start it again with restart_background_sync() or POST /gpu/sync/restart"
                );
                return;
            }
            let delay = FIRST_RESTART_DELAY * 2u32.pow(in_a_row - 1);
            log::error!("the sync worker failed: {message}; restarting it in {} ms", delay.as_millis());
            if !self.pause(delay) {
                return;
            }
        }
    }

    /// The worker: sleeps until learning reaches the threshold, the background deadline passes,
    /// or it is told to stop.
    fn run(&self) {
        loop {
            if self.fail_next.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
                panic!("simulated sync worker failure");
            }
            // Read the matcher before taking the signal lock: learning signals while holding the
            // matcher's write lock, so holding the signal lock while waiting for the matcher
            // would deadlock.
            let settings = *lock(&self.settings);
            let deadline = settings.background.then(|| {
                let since = self
                    .matcher
                    .upgrade()
                    .map(|m| fork::run(|| Self::read(&m).since_last_promotion()))
                    .unwrap_or_default();
                Instant::now() + settings.interval.saturating_sub(since)
            });
            let mut signal = lock(&self.signal);
            while !signal.stop && !signal.closed && !signal.pending && !signal.poked {
                match deadline {
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
            // Woken by learning or new settings (otherwise the deadline passed).
            let signalled = std::mem::take(&mut signal.pending) | std::mem::take(&mut signal.poked);
            drop(signal);
            // The label is what made the promotion due now, whatever woke the worker: after
            // training mode or new settings it may be the interval as well as the threshold.
            match self.due_trigger() {
                Some(source) => {
                    self.trigger(source);
                }
                None if !signalled => {
                    // Nothing to promote at the deadline: wait a whole interval before looking
                    // again.
                    if self.matcher.strong_count() == 0 {
                        return;
                    }
                    let idle = lock(&self.signal);
                    let asleep = |s: &mut Signal| !s.stop && !s.closed && !s.pending && !s.poked;
                    drop(self.wake.wait_timeout_while(idle, settings.interval, asleep));
                }
                None => {}
            }
            self.cycles.fetch_add(1, Relaxed);
        }
    }
}

/// The worker's thread and the process that started it: after a `fork`, the child has the
/// handle but not the thread.
struct Worker {
    handle: JoinHandle<()>,
    pid: u32,
}

impl Worker {
    fn is_running(&self) -> bool {
        self.pid == std::process::id() && !self.handle.is_finished()
    }

    /// Waits for the thread to end; in a forked child there is no thread to wait for (joining
    /// its id there is undefined), so the handle is leaked.
    fn join(self) {
        if self.pid == std::process::id() {
            let _ = self.handle.join();
        } else {
            std::mem::forget(self.handle);
        }
    }
}

/// Promotes a matcher's recent tier on the four triggers (see the module documentation).
pub struct SyncManager {
    shared: Arc<Shared>,
    worker: Mutex<Option<Worker>>,
    leaving_training: Mutex<()>,
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
            fail_next: AtomicU32::new(0),
            cycles: AtomicU64::new(0),
        });
        fork::run(|| matcher.write().unwrap_or_else(|e| e.into_inner()).set_listener(Some(shared.clone())));
        SyncManager { shared, worker: Mutex::new(None), leaving_training: Mutex::new(()) }
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

    /// Starts the worker (also one that failed too often, or was stopped); `false` when it is
    /// already running.
    pub fn start(&self) -> bool {
        let mut worker = lock(&self.worker);
        if worker.as_ref().is_some_and(Worker::is_running) {
            return false;
        }
        if let Some(ended) = worker.take() {
            ended.join();
        }
        lock(&self.shared.signal).stop = false;
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name("kato-gpu-sync".into())
            .spawn(move || shared.supervise())
            .expect("spawning the sync thread");
        *worker = Some(Worker { handle, pid: std::process::id() });
        true
    }

    /// Stops the worker and waits for it (at most one promotion in progress).
    pub fn stop(&self) {
        lock(&self.shared.signal).stop = true;
        self.shared.wake.notify_all();
        // Not joined under the lock: `is_running` must not wait for a promotion to end.
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            worker.join();
        }
    }

    /// Whether the worker thread is alive in this process (never in a forked child, until
    /// started there).
    pub fn is_running(&self) -> bool {
        lock(&self.worker).as_ref().is_some_and(Worker::is_running)
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
        let _one_at_a_time = lock(&self.leaving_training);
        if !self.shared.training.load(Relaxed) {
            return None;
        }
        // Promote while still in training mode, so that the worker cannot promote the same
        // patterns first under its own label.
        let recent = self.shared.matcher.upgrade().map_or(0, |m| fork::run(|| Shared::read(&m).tiers().recent));
        let moved = if trigger && recent > 0 { self.shared.trigger(TRAINING) } else { 0 };
        self.shared.training.store(false, Relaxed);
        self.poke();
        Some(moved)
    }

    pub fn stats(&self) -> SyncStats {
        lock(&self.shared.stats).clone()
    }

    /// Makes the worker fail (panic) `count` times, starting at once: to exercise the supervisor
    /// (each restart fails again until the count is spent).
    pub fn simulate_worker_failure(&self, count: u32) {
        self.shared.fail_next.fetch_add(count, Relaxed);
        self.poke();
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

    #[test]
    fn the_settings_ranges() {
        let max_interval = MAX_SYNC_INTERVAL_SECONDS as f64;
        assert_eq!(SyncSettings::new(1, 0.001, true).unwrap().interval(), Duration::from_millis(1));
        assert_eq!(
            SyncSettings::new(MAX_SYNC_THRESHOLD as i128, max_interval, false).unwrap().threshold(),
            1_000_000_000
        );
        for (threshold, field) in [
            (0, "sync_threshold"),
            (-1, "sync_threshold"),
            (MAX_SYNC_THRESHOLD as i128 + 1, "sync_threshold"),
            (10i128.pow(30), "sync_threshold"),
        ] {
            let Err(KatoError::InvalidValue(message)) = SyncSettings::new(threshold, 1.0, true) else {
                panic!("{threshold}")
            };
            assert!(message.starts_with(field), "{message}");
        }
        for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY, max_interval * 1.000_001, 1.5e19] {
            let Err(KatoError::InvalidValue(message)) = SyncSettings::new(5, seconds, true) else {
                panic!("{seconds}")
            };
            assert!(message.starts_with("sync_interval_seconds"), "{message}");
        }
    }

    /// Every accepted extreme leaves the worker alive and promoting (it once panicked on an
    /// interval too long to add to `Instant::now()`).
    #[test]
    fn the_worker_survives_every_accepted_setting() {
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SyncSettings::new(1, 1.0, true).unwrap());
        assert!(sync.start());
        let max_interval = MAX_SYNC_INTERVAL_SECONDS as f64;
        let extremes = [
            (MAX_SYNC_THRESHOLD as i128, max_interval, true),
            (MAX_SYNC_THRESHOLD as i128, max_interval, false),
            (1, max_interval, true),
            (MAX_SYNC_THRESHOLD as i128, 0.001, true),
            (1, 1e-9, true),
        ];
        for (k, (threshold, seconds, background)) in extremes.into_iter().enumerate() {
            sync.configure(SyncSettings::new(threshold, seconds, background).unwrap());
            learn(&m, k * 10, 3);
            assert_eq!(sync.trigger(MANUAL), 3);
            assert!(sync.is_running(), "{threshold} {seconds} {background}");
        }
        // The smallest threshold still promotes by itself.
        sync.configure(SyncSettings::new(1, max_interval, false).unwrap());
        learn(&m, 1000, 1);
        assert!(wait_until(|| recent(&m) == 0));
        assert_eq!(sync.stats().worker_failures, 0);
        sync.stop();
        assert!(!sync.is_running());
    }

    /// The label is what made the promotion due, whichever way training mode ended.
    #[test]
    fn every_trigger_is_labelled_after_training_mode() {
        let last = |sync: &SyncManager| sync.stats().last_source;
        // Leaving training mode with a sync: "training".
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SyncSettings::new(1000, MAX_SYNC_INTERVAL_SECONDS as f64, true).unwrap());
        sync.start();
        sync.enter_training();
        learn(&m, 0, 5);
        assert_eq!(sync.exit_training(true), Some(5));
        assert_eq!(last(&sync).as_deref(), Some(TRAINING));

        // Without a sync, the threshold already reached in training: "automatic".
        sync.configure(SyncSettings::new(3, MAX_SYNC_INTERVAL_SECONDS as f64, true).unwrap());
        sync.enter_training();
        learn(&m, 10, 4);
        assert_eq!(recent(&m), 4, "training mode holds the threshold trigger");
        assert_eq!(sync.exit_training(false), Some(0));
        assert!(wait_until(|| recent(&m) == 0));
        assert_eq!(last(&sync).as_deref(), Some(AUTOMATIC));

        // Without a sync, below the threshold, the interval passed: "background", not "automatic".
        sync.configure(SyncSettings::new(1000, 0.05, true).unwrap());
        sync.enter_training();
        learn(&m, 20, 2);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(recent(&m), 2, "training mode holds the interval trigger");
        assert_eq!(sync.exit_training(false), Some(0));
        assert!(wait_until(|| recent(&m) == 0));
        assert_eq!(last(&sync).as_deref(), Some(BACKGROUND));

        // Then learning up to the threshold: "automatic"; on demand: "manual".
        sync.configure(SyncSettings::new(2, MAX_SYNC_INTERVAL_SECONDS as f64, false).unwrap());
        learn(&m, 30, 2);
        assert!(wait_until(|| recent(&m) == 0));
        assert_eq!(last(&sync).as_deref(), Some(AUTOMATIC));
        learn(&m, 40, 1);
        assert_eq!(sync.trigger(MANUAL), 1);
        assert_eq!(last(&sync).as_deref(), Some(MANUAL));
        assert_eq!(sync.stats().total_syncs, 5);
    }

    #[test]
    fn a_failed_worker_is_restarted_and_counted() {
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SyncSettings::new(10, 3600.0, false).unwrap());
        sync.start();
        sync.simulate_worker_failure(2);
        assert!(wait_until(|| sync.stats().worker_restarts == 2));
        let stats = sync.stats();
        assert_eq!(stats.worker_failures, 2);
        assert_eq!(stats.last_error.as_deref(), Some("simulated sync worker failure"));
        assert!(stats.last_error_time.is_some());
        assert!(sync.is_running());
        // The restarted worker still promotes.
        learn(&m, 0, 10);
        assert!(wait_until(|| recent(&m) == 0));
        assert_eq!(sync.stats().last_source.as_deref(), Some(AUTOMATIC));
    }

    #[test]
    fn a_worker_failing_in_a_row_stops_until_started_again() {
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SyncSettings::new(10, 3600.0, false).unwrap());
        sync.start();
        sync.simulate_worker_failure(MAX_CONSECUTIVE_FAILURES);
        assert!(wait_until(|| !sync.is_running()));
        let stats = sync.stats();
        assert_eq!((stats.worker_failures, stats.worker_restarts), (5, 4));
        assert!(sync.start(), "a stopped worker starts again");
        learn(&m, 0, 10);
        assert!(wait_until(|| recent(&m) == 0));
        assert!(sync.is_running());
    }

    /// A forked child inherits the handle of a thread it does not have: not running, and
    /// stopping (or dropping) the manager must not join it.
    #[test]
    fn a_worker_started_by_another_process_is_not_running() {
        let m = shared_matcher();
        let sync = SyncManager::new(&m, SETTINGS);
        let parked = std::thread::spawn(std::thread::park);
        *lock(&sync.worker) = Some(Worker { handle: parked, pid: std::process::id() ^ 1 });
        assert!(!sync.is_running());
        sync.stop();
        assert!(sync.start() && sync.is_running());
    }
}
