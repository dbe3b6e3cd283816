//! Spreading a scan over the cores from whichever thread asks for it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Runs `work` on every item of `items` and returns the non-empty results in item order (the
/// result ordering's sorts run fastest on candidates in slot order), on the calling thread and on
/// the other cores of the rayon pool, which take the items in order from a shared counter. The
/// calling thread is already running, so a query starts at once even when the pool's threads
/// were idle (on a small VM the woken thread can start late, or share the caller's vCPU for a
/// while); a helper that comes late finds fewer items left, not half of the work set aside for it.
pub(crate) fn spread_over_cores<W, T: Send>(
    items: std::ops::Range<usize>,
    init: impl Fn() -> W + Sync,
    work: impl Fn(&mut W, usize) -> Vec<T> + Sync,
) -> Vec<Vec<T>> {
    let next = AtomicUsize::new(items.start);
    let parts = std::sync::Mutex::new(Vec::new());
    let run = || {
        let mut state = None;
        let mut mine = Vec::new();
        loop {
            let item = next.fetch_add(1, Relaxed);
            if item >= items.end {
                break;
            }
            let found = work(state.get_or_insert_with(&init), item);
            if !found.is_empty() {
                mine.push((item, found));
            }
        }
        parts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(mine);
    };
    let helpers = rayon::current_num_threads().saturating_sub(1).min(items.len().saturating_sub(1));
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| run());
        }
        run();
    });
    let mut parts = parts.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    parts.sort_unstable_by_key(|&(item, _)| item);
    parts.into_iter().map(|(_, found)| found).collect()
}
