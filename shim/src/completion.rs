//! Delayed replies: the completion thread sends each reply when the device
//! model says the op completes.
//!
//! FUSE threads do the real I/O at once and hand the reply (with its op-log
//! row) to this thread with a due time, then go back to the kernel for the
//! next request, so many requests overlap exactly as they would on a device
//! with queueing. The thread sleeps until shortly before the earliest due
//! time and yields for the last stretch: a sleeping thread wakes tens to
//! hundreds of microseconds late on a busy VM, which would distort
//! sub-millisecond latencies (the `emu://` target does the same).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mlpdrive_emu::{Clock, RealClock};

/// Work to run at the due time: send a reply, log a row.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The final stretch before a due time is spent yielding, not sleeping.
const SPIN_NS: u64 = 200_000;

struct Entry {
    due_ns: u64,
    seq: u64,
    job: Job,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ns, self.seq) == (other.due_ns, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the max-heap pops the earliest due time first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due_ns, other.seq).cmp(&(self.due_ns, self.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    seq: u64,
    /// Deliver everything now (unmounting: nobody should wait any more).
    hurry: bool,
    stop: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    clock: RealClock,
}

/// The completion thread and its queue.
pub(crate) struct Completer {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Completer {
    pub(crate) fn start(clock: RealClock) -> std::io::Result<Completer> {
        let inner = Arc::new(Inner { state: Mutex::new(State::default()), wake: Condvar::new(), clock });
        let worker = inner.clone();
        let thread = std::thread::Builder::new().name("shim-complete".into()).spawn(move || run(&worker))?;
        Ok(Completer { inner, thread: Mutex::new(Some(thread)) })
    }

    /// Runs `job` at `due_ns` (on the clock given to `start`).
    pub(crate) fn schedule(&self, due_ns: u64, job: Job) {
        let mut st = self.inner.state.lock().expect("completion queue poisoned");
        st.seq += 1;
        let seq = st.seq;
        let earliest = st.heap.peek().is_none_or(|e| due_ns < e.due_ns);
        st.heap.push(Entry { due_ns, seq, job });
        drop(st);
        if earliest {
            self.inner.wake.notify_one();
        }
    }

    /// From now on, everything queued (and queued later) runs at once.
    pub(crate) fn hurry(&self) {
        self.inner.state.lock().expect("completion queue poisoned").hurry = true;
        self.inner.wake.notify_one();
    }

    /// Runs what is left and stops the thread.
    pub(crate) fn stop(&self) {
        {
            let mut st = self.inner.state.lock().expect("completion queue poisoned");
            st.hurry = true;
            st.stop = true;
        }
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.lock().expect("completion thread poisoned").take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

impl Drop for Completer {
    /// A mount that failed half-way must not leave the thread behind.
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(inner: &Inner) {
    set_fine_timer_slack();
    let mut due_jobs: Vec<Job> = Vec::new();
    loop {
        {
            let mut st = inner.state.lock().expect("completion queue poisoned");
            loop {
                let now_ns = inner.clock.now_ns();
                while st.heap.peek().is_some_and(|e| st.hurry || e.due_ns <= now_ns) {
                    due_jobs.push(st.heap.pop().expect("peeked").job);
                }
                if !due_jobs.is_empty() {
                    break;
                }
                let Some(next_ns) = st.heap.peek().map(|e| e.due_ns) else {
                    if st.stop {
                        return;
                    }
                    st = inner.wake.wait(st).expect("completion queue poisoned");
                    continue;
                };
                let left_ns = next_ns - now_ns;
                if left_ns > SPIN_NS {
                    let sleep = Duration::from_nanos(left_ns - SPIN_NS);
                    st = inner.wake.wait_timeout(st, sleep).expect("completion queue poisoned").0;
                } else {
                    drop(st);
                    std::thread::yield_now();
                    st = inner.state.lock().expect("completion queue poisoned");
                }
            }
        }
        for job in due_jobs.drain(..) {
            job();
        }
    }
}

/// Asks for 1 ns timer slack on this thread (the default 50 µs would make
/// every timed wake-up late by up to that much).
fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only
    // the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_due_order_and_not_early() {
        let clock = RealClock::new();
        let c = Completer::start(clock).unwrap();
        let (tx, rx) = mpsc::channel();
        let start = clock.now_ns();
        for (i, delay_ms) in [(0u32, 30u64), (1, 10), (2, 20)] {
            let tx = tx.clone();
            let clock2 = clock;
            let due = start + delay_ms * 1_000_000;
            c.schedule(due, Box::new(move || tx.send((i, clock2.now_ns() >= due)).unwrap()));
        }
        let got: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![(1, true), (2, true), (0, true)]);
        c.stop();
    }

    #[test]
    fn stop_runs_what_is_left() {
        let c = Completer::start(RealClock::new()).unwrap();
        let (tx, rx) = mpsc::channel();
        c.schedule(u64::MAX / 2, Box::new(move || tx.send(()).unwrap()));
        c.stop();
        assert!(rx.try_recv().is_ok());
    }
}
