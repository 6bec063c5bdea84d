//! Ctrl-C: the first SIGINT/SIGTERM asks the run to stop (in-flight I/O
//! drains, results are written with status "interrupted"); a second one
//! kills the process the default way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

static STOP_FLAG: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: signal() and raise() are async-signal-safe; restoring the
        // default disposition and re-raising terminates the process.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    let p = STOP_FLAG.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: p comes from Arc::into_raw in `install` and is never freed
        // (the flag lives for the process); an atomic store is
        // async-signal-safe.
        unsafe { (*p).store(true, Ordering::SeqCst) };
    }
}

/// Routes SIGINT and SIGTERM to `stop`.
pub fn install(stop: &Arc<AtomicBool>) {
    let raw = Arc::into_raw(stop.clone()) as *mut AtomicBool;
    let old = STOP_FLAG.swap(raw, Ordering::SeqCst);
    if !old.is_null() {
        // SAFETY: `old` came from Arc::into_raw in an earlier install; the
        // handler now uses `raw`, so this reference can be released.
        unsafe { drop(Arc::from_raw(old)) };
    }
    // SAFETY: installing a handler that only touches atomics.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether a signal asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
