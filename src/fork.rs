//! Surviving `fork()`.
//!
//! A forked child has one thread: the one that called `fork`. Whatever the other threads held at
//! that instant (a matcher's lock mid-query, the vocabulary's lock mid-learn, the sync worker's
//! state) stays held for ever in the child, and rayon's global pool has no threads left to run a
//! job. Two rules make a child usable:
//!
//! - **Quiescence**: every entry into the core that takes a lock runs inside [`run`], which holds
//!   a process-wide gate for reading. [`prepare`] (called before `fork`) takes the gate for
//!   writing, so the fork happens between operations, never inside one; [`after_fork`] opens it
//!   again in both processes.
//! - **A pool per process**: in the process that loaded the library, [`run`] uses rayon's global
//!   pool as before; in a forked child (libc tells us, through an at-fork handler, whoever called
//!   `fork`), it runs the work in a pool built in that process, rebuilt again in a grandchild.
//!
//! The gate is re-entrant per thread (a nested [`run`] does not take it again: with a writer
//! waiting, a second read would deadlock), and it is never held while waiting for another thread
//! that may take it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Once, RwLock, RwLockWriteGuard};

static GATE: RwLock<()> = RwLock::new(());

/// Forks between the process that loaded the library and this one: 0 there, 1 in a child, 2 in
/// a grandchild... Counted by a handler that libc runs in every child, whoever called `fork`.
static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCHING: Once = Once::new();

/// The rayon pool of a forked process, with the [`FORKS`] count it was built at.
static CHILD_POOL: Mutex<Option<(u64, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The gate's write guard between [`prepare`] and [`after_fork`], which run on the same
    /// thread (the one that forks; in the child, the only one).
    static HELD: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs in the child, right after `fork` (only async-signal-safe work is allowed there).
extern "C" fn count_fork() {
    FORKS.fetch_add(1, Relaxed);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn on_fork_in_child(child: extern "C" fn()) {
    extern "C" {
        // What glibc's `pthread_atfork` calls; exported by libc.so.6 itself on every glibc since
        // 2.3.2 (`pthread_atfork` was a static stub in libpthread_nonshared.a before 2.28).
        fn __register_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
            dso_handle: *mut std::ffi::c_void,
        ) -> std::ffi::c_int;
    }
    // SAFETY: registers a handler that only increments an atomic. A null DSO handle means "never
    // unregister", right for a library that is never unloaded.
    unsafe { __register_atfork(None, None, Some(child), std::ptr::null_mut()) };
}

#[cfg(all(unix, not(all(target_os = "linux", target_env = "gnu"))))]
fn on_fork_in_child(child: extern "C" fn()) {
    extern "C" {
        fn pthread_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
        ) -> std::ffi::c_int;
    }
    // SAFETY: as above.
    unsafe { pthread_atfork(None, None, Some(child)) };
}

#[cfg(not(unix))]
fn on_fork_in_child(_child: extern "C" fn()) {}

/// Starts counting forks; called when the library is loaded (the bindings' module init), and by
/// the first [`run`] otherwise.
pub fn watch_forks() {
    WATCHING.call_once(|| on_fork_in_child(count_fork));
}

/// Whether this process is a fork of the one that loaded the library.
pub fn is_forked() -> bool {
    watch_forks();
    FORKS.load(Relaxed) != 0
}

/// Runs `f` between forks (holding the gate, unless this thread already does) on this process's
/// rayon pool. Every entry into the core that takes a matcher, vocabulary or device lock, or uses
/// rayon, goes through here.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let outermost = DEPTH.with(Cell::get) == 0;
    let _gate = outermost.then(|| GATE.read().unwrap_or_else(|e| e.into_inner()));
    let nested = move || {
        DEPTH.with(|d| d.set(d.get() + 1));
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                DEPTH.with(|d| d.set(d.get() - 1));
            }
        }
        let _leave = Leave;
        f()
    };
    match child_pool() {
        Some(pool) => pool.install(nested),
        None => nested(),
    }
}

/// `None` in the process that loaded the library (rayon's global pool serves it); otherwise this
/// process's own pool.
fn child_pool() -> Option<Arc<rayon::ThreadPool>> {
    if !is_forked() {
        return None;
    }
    let forks = FORKS.load(Relaxed);
    let mut slot = lock(&CHILD_POOL);
    if let Some((built_at, pool)) = slot.as_ref() {
        if *built_at == forks {
            return Some(pool.clone());
        }
    }
    // A pool inherited from a parent has no threads here; dropping it would signal them. Leak it.
    if let Some(stale) = slot.take() {
        std::mem::forget(stale);
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .thread_name(|k| format!("kato-gpu-{k}"))
            .build()
            .expect("building a thread pool in a forked process"),
    );
    *slot = Some((forks, pool.clone()));
    Some(pool)
}

/// Before `fork`: waits for every operation in flight to finish and holds new ones off. Call
/// without holding any lock an operation may need (in Python: with the GIL released).
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub fn prepare() {
    // Taken by the forking thread inside an operation? Then the gate is already held by this
    // thread for reading and a write would wait for itself: fork inside it, as before.
    if DEPTH.with(Cell::get) > 0 {
        return;
    }
    let guard = GATE.write().unwrap_or_else(|e| e.into_inner());
    HELD.with(|held| *held.borrow_mut() = Some(guard));
}

/// After `fork`, in the parent and in the child: lets operations run again. In the child, the
/// write guard taken by [`prepare`] is released by the same thread that took it (the only
/// thread the child has), which leaves the gate as it was before the fork.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub fn after_fork() {
    HELD.with(|held| drop(held.borrow_mut().take()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_is_reentrant_and_the_gate_holds_off_a_fork() {
        assert!(!is_forked());
        assert!(run(|| run(|| rayon::current_num_threads() > 0)));
        // An operation in flight keeps `prepare` waiting; the nested `run` inside it does not
        // deadlock against the waiting writer.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let op = std::thread::spawn(move || {
            run(move || {
                entered_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                run(|| 7)
            })
        });
        entered_rx.recv().unwrap();
        let forker = std::thread::spawn(|| {
            prepare();
            let held = HELD.with(|held| held.borrow().is_some());
            after_fork();
            held
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!forker.is_finished(), "prepare waits for the operation in flight");
        go_tx.send(()).unwrap();
        assert_eq!(op.join().unwrap(), 7);
        assert!(forker.join().unwrap());
        assert_eq!(run(|| 1), 1, "the gate is open again");
    }
}
