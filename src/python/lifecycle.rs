//! The process's life around the native code: releasing the GIL, `fork`, interpreter exit.
//!
//! **Exit.** Once the interpreter finalises, a thread that takes the GIL is ended by CPython with
//! `pthread_exit`, whose forced unwinding cannot cross Rust frames: the process aborts (SIGABRT)
//! whenever a daemon thread comes back from native code (or logs from it) during finalisation.
//! So no thread may take the GIL from native code once exit begins. `kato_gpu` registers
//! [`interpreter_exiting`] with `atexit` (atexit callbacks run before finalisation starts); from
//! then on a thread returning from native code parks for ever instead (the process is ending:
//! exit reaps it), and a log record from native code is dropped. A thread that was already on its
//! way back into Python is waited for. The thread running the exit callbacks is exempt: it may
//! still call into kato_gpu.
//!
//! **Fork.** `kato_gpu` registers [`before_fork`] and [`after_fork`] with `os.register_at_fork`;
//! see `crate::fork` for what they guarantee.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::Duration;

use pyo3::prelude::*;

use crate::fork;

static EXITING: AtomicBool = AtomicBool::new(false);
/// Threads between "not exiting, going back to Python" and holding the GIL (or done logging).
static IN_TRANSIT: AtomicUsize = AtomicUsize::new(0);
/// The thread that ran [`interpreter_exiting`].
static EXIT_THREAD: OnceLock<ThreadId> = OnceLock::new();

fn exempt() -> bool {
    EXIT_THREAD.get() == Some(&std::thread::current().id())
}

thread_local! {
    /// This thread's transits in progress: a call back into kato_gpu from Python code that native
    /// code is running (a collection store's write, a logging handler) is nested in one.
    static TRANSITS: Cell<u32> = const { Cell::new(0) };
}

/// Counts this thread in transit to the GIL; `false` (nothing counted) once exit has begun. A
/// nested transit always goes on: the exit callback is waiting for the outer one to end, so the
/// interpreter is not finalising yet.
fn enter_python() -> bool {
    IN_TRANSIT.fetch_add(1, SeqCst);
    if EXITING.load(SeqCst) && !exempt() && TRANSITS.with(Cell::get) == 0 {
        IN_TRANSIT.fetch_sub(1, SeqCst);
        return false;
    }
    TRANSITS.with(|t| t.set(t.get() + 1));
    true
}

fn leave_python() {
    TRANSITS.with(|t| t.set(t.get() - 1));
    IN_TRANSIT.fetch_sub(1, SeqCst);
}

/// Never returns: the interpreter is finalising and this thread must not take the GIL again.
fn park_for_ever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Runs `f` with the GIL released, between forks (see `crate::fork::run`) and on this process's
/// rayon pool; safe to return from while the interpreter exits. Every call into the core that
/// takes its locks or uses rayon goes through here.
pub fn unlocked<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    released(py, || fork::run(f))
}

/// Like [`unlocked`] without the fork gate: for waits on another thread that may take the gate
/// itself (joining the sync worker), which would otherwise hold a fork off for ever.
pub fn released<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    let result = py.allow_threads(|| {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        if !enter_python() {
            park_for_ever();
        }
        result
    });
    leave_python();
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `Python::with_gil` for native code running with the GIL released (a collection store's
/// write inside a learn); parks for ever once exit has begun (see the module documentation).
pub fn with_gil<T>(f: impl for<'py> FnOnce(Python<'py>) -> T) -> T {
    if !enter_python() {
        park_for_ever();
    }
    let result = Python::with_gil(f);
    leave_python();
    result
}

/// `pyo3_log`'s logger, silent once exit has begun (logging takes the GIL).
struct ExitSafeLogger(pyo3_log::Logger);

impl log::Log for ExitSafeLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if enter_python() {
            self.0.log(record);
            leave_python();
        }
    }

    fn flush(&self) {}
}

/// Routes Rust `log` records to Python's `logging` (loggers named after the Rust modules,
/// `kato_gpu.*`); a no-op if a logger is already installed.
pub fn install_logger(py: Python<'_>) -> PyResult<()> {
    let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels)?;
    if log::set_boxed_logger(Box::new(ExitSafeLogger(logger))).is_ok() {
        // pyo3_log's default: everything from DEBUG up reaches Python, which filters by level.
        log::set_max_level(log::LevelFilter::Debug);
    }
    Ok(())
}

/// `atexit` callback: from now on no other thread takes the GIL from native code. Waits (with the
/// GIL released) for threads already on their way back.
#[pyfunction]
fn interpreter_exiting(py: Python<'_>) {
    let _ = EXIT_THREAD.set(std::thread::current().id());
    EXITING.store(true, SeqCst);
    py.allow_threads(|| {
        while IN_TRANSIT.load(SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// `os.register_at_fork(before=...)`: waits (GIL released) for operations in flight and holds new
/// ones off until the fork is done.
#[pyfunction]
fn before_fork(py: Python<'_>) {
    py.allow_threads(fork::prepare);
}

/// `os.register_at_fork(after_in_parent=..., after_in_child=...)`. In the child, the other threads
/// that were on their way back into Python do not exist.
#[pyfunction]
fn after_fork(in_child: bool) {
    if in_child {
        // Only this thread's own transits (if it forked from Python code run by native code)
        // came along.
        IN_TRANSIT.store(TRANSITS.with(Cell::get) as usize, SeqCst);
    }
    fork::after_fork();
}

/// Whether this process is a fork of the one that loaded kato_gpu.
#[pyfunction]
fn is_forked_process() -> bool {
    fork::is_forked()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fork::watch_forks();
    install_logger(m.py())?;
    m.add_function(wrap_pyfunction!(interpreter_exiting, m)?)?;
    m.add_function(wrap_pyfunction!(before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(is_forked_process, m)?)
}
