//! The run's clock: every workload and the engine read time through it, so a
//! run can be driven by a simulated clock instead of the host's.
//!
//! Rule for workload code: never call `Instant::now()`, `SystemTime::now()`
//! or `thread::sleep` directly. Use the `now` the engine passes to
//! [`crate::engine::OpSource::next`], a completion's timestamps, or this
//! clock; wait for time with [`crate::engine::Next::WaitUntil`].
//!
//! Times stay `std::time::Instant`s on every clock, so the target trait and
//! the recorder do not change with the clock kind.
//!
//! # The virtual clock
//!
//! [`Clock::new_virtual`] makes a discrete-event clock: virtual time is a
//! count of nanoseconds since an epoch, shown as `epoch + ns` so it is still
//! an `Instant`. The epoch is read from the host once, when the clock is
//! made, and only as an origin: every time the run sees is the epoch plus a
//! number the simulation computed, so differences (latencies, durations,
//! rates) do not depend on the host. Nothing really sleeps; time moves only
//! when a caller advances it, and it never goes backwards:
//!
//! - [`Clock::sleep_until`] jumps to the given time (the engine calls it
//!   when a source waits for a time with nothing in flight);
//! - the emulated device's queue (`emu://…?clock=virtual`) jumps to its
//!   earliest pending completion when it is asked to reap and nothing is due
//!   yet (bounded by the reap timeout, so a hung op still ends in a stall
//!   after `io.timeout` of virtual time).
//!
//! A run on the virtual clock is deterministic only if one thread at a time
//! drives it: the run uses a single engine worker thread (see run.rs), and
//! the layout phases before it run on the main thread. Other threads (the
//! progress display) may read the clock, never advance it.
//!
//! An observer ([`Clock::observe_advances`]) is told every time virtual time
//! moves, in the advancing thread, before the caller goes on; the run uses it
//! to sample the 1 s time series at exact virtual-second boundaries.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlpdrive_emu::Clock as _;
use mlpdrive_emu::VirtualClock;

/// Called with (old time, new time) whenever virtual time moves forward.
type Observer = Box<dyn FnMut(Instant, Instant) + Send>;

/// A cheap, cloneable handle to the run's clock.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Debug, Default)]
enum Kind {
    /// The host's monotonic clock.
    #[default]
    Real,
    /// Simulated time shared by every clone.
    Virtual(Arc<VirtualTime>),
}

struct VirtualTime {
    /// The `Instant` that virtual time 0 is shown as.
    epoch: Instant,
    /// Nanoseconds since `epoch`.
    ns: VirtualClock,
    /// Told about every advance. The lock also serialises advances, so an
    /// observer sees each interval exactly once.
    observer: Mutex<Option<Observer>>,
}

impl fmt::Debug for VirtualTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualTime").field("ns", &self.ns.now_ns()).finish_non_exhaustive()
    }
}

impl Clock {
    /// The host's monotonic clock.
    pub fn real() -> Self {
        Self { kind: Kind::Real }
    }

    /// A virtual clock at time 0 (shown as an epoch read once from the host).
    pub fn new_virtual() -> Self {
        let vt = VirtualTime { epoch: Instant::now(), ns: VirtualClock::new(), observer: Mutex::new(None) };
        Self { kind: Kind::Virtual(Arc::new(vt)) }
    }

    /// The current time on this clock.
    pub fn now(&self) -> Instant {
        match &self.kind {
            Kind::Real => Instant::now(),
            Kind::Virtual(vt) => vt.epoch + Duration::from_nanos(vt.ns.now_ns()),
        }
    }

    /// Blocks until `t` on this clock (returns at once if `t` has passed).
    /// On a virtual clock this moves time forward to `t` and returns at once.
    pub fn sleep_until(&self, t: Instant) {
        match &self.kind {
            Kind::Real => {
                let now = Instant::now();
                if t > now {
                    std::thread::sleep(t - now);
                }
            }
            Kind::Virtual(vt) => vt.advance_to(t),
        }
    }

    /// True when time is simulated (a run on a virtual clock).
    pub fn is_virtual(&self) -> bool {
        match self.kind {
            Kind::Real => false,
            Kind::Virtual(_) => true,
        }
    }

    /// Virtual clocks only: calls `f(old, new)` every time virtual time moves
    /// forward, in the thread that moves it, before that thread goes on.
    /// Replaces an earlier observer. Returns false (and drops `f`) on the
    /// real clock, whose time moves by itself.
    pub fn observe_advances(&self, f: impl FnMut(Instant, Instant) + Send + 'static) -> bool {
        match &self.kind {
            Kind::Real => false,
            Kind::Virtual(vt) => {
                *vt.observer.lock().expect("clock observer poisoned") = Some(Box::new(f));
                true
            }
        }
    }
}

impl VirtualTime {
    fn advance_to(&self, t: Instant) {
        let target_ns = u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut observer = self.observer.lock().expect("clock observer poisoned");
        let old_ns = self.ns.now_ns();
        if target_ns <= old_ns {
            return;
        }
        let new_ns = self.ns.advance_to(target_ns);
        if let Some(f) = observer.as_mut() {
            f(self.epoch + Duration::from_nanos(old_ns), self.epoch + Duration::from_nanos(new_ns));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn the_real_clock_sleeps_until_the_given_time_and_not_before() {
        let c = Clock::real();
        assert!(!c.is_virtual());
        let t = c.now() + Duration::from_millis(20);
        c.sleep_until(t);
        assert!(c.now() >= t);
        // A time in the past returns at once.
        c.sleep_until(t - Duration::from_millis(10));
        assert!(!c.observe_advances(|_, _| {}), "the real clock has no advances to observe");
    }

    #[test]
    fn virtual_time_moves_only_when_advanced_and_never_backwards() {
        let c = Clock::new_virtual();
        assert!(c.is_virtual());
        let t0 = c.now();
        // Real time passes; virtual time does not.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t0);
        c.sleep_until(t0 + Duration::from_secs(3600));
        assert_eq!(c.now() - t0, Duration::from_secs(3600), "an hour's sleep is a jump");
        c.sleep_until(t0 + Duration::from_secs(1));
        assert_eq!(c.now() - t0, Duration::from_secs(3600), "time never goes backwards");
        c.sleep_until(t0 + Duration::from_secs(3600) + Duration::from_nanos(1));
        assert_eq!(c.now() - t0, Duration::from_nanos(3_600_000_000_001), "nanosecond resolution");
    }

    #[test]
    fn clones_share_one_time() {
        let a = Clock::new_virtual();
        let b = a.clone();
        let t0 = a.now();
        b.sleep_until(t0 + Duration::from_millis(7));
        assert_eq!(a.now() - t0, Duration::from_millis(7));
        // A separate virtual clock has its own time.
        let c = Clock::new_virtual();
        let c0 = c.now();
        assert_eq!(c.now(), c0);
    }

    #[test]
    fn the_observer_sees_every_interval_once_in_order() {
        let c = Clock::new_virtual();
        let t0 = c.now();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        assert!(c.observe_advances(move |from, to| s.lock().unwrap().push((from - t0, to - t0))));
        c.sleep_until(t0 + Duration::from_millis(10));
        c.sleep_until(t0 + Duration::from_millis(5)); // the past: not an advance
        c.sleep_until(t0 + Duration::from_millis(10)); // now: not an advance
        c.sleep_until(t0 + Duration::from_millis(25));
        let ms = Duration::from_millis;
        assert_eq!(*seen.lock().unwrap(), [(ms(0), ms(10)), (ms(10), ms(25))]);
    }

    #[test]
    fn the_observer_runs_in_the_advancing_thread_before_it_goes_on() {
        let c = Clock::new_virtual();
        let t0 = c.now();
        let calls = Arc::new(AtomicU64::new(0));
        let k = calls.clone();
        c.observe_advances(move |_, _| {
            k.fetch_add(1, Ordering::SeqCst);
        });
        let c2 = c.clone();
        std::thread::spawn(move || c2.sleep_until(t0 + Duration::from_secs(1))).join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        c.sleep_until(t0 + Duration::from_secs(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "counted before sleep_until returned");
    }

    /// The data path of a run reads time only through the run's clock, so a
    /// virtual-clock run cannot pick up the host's time by accident. (The
    /// sampler thread in run.rs reads real time for progress and its
    /// watchdog; it is not in the data path.)
    #[test]
    fn the_data_path_reads_time_only_through_the_clock() {
        const DATA_PATH: &[(&str, &str)] = &[
            ("engine.rs", include_str!("engine.rs")),
            ("recorder.rs", include_str!("recorder.rs")),
            ("workload/mod.rs", include_str!("workload/mod.rs")),
            ("workload/raw.rs", include_str!("workload/raw.rs")),
            ("target/emu/mod.rs", include_str!("target/emu/mod.rs")),
            ("target/emu/queue.rs", include_str!("target/emu/queue.rs")),
            ("target/emu/store.rs", include_str!("target/emu/store.rs")),
            ("datagen/mod.rs", include_str!("datagen/mod.rs")),
        ];
        for (file, text) in DATA_PATH {
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for needle in ["Instant::now", "SystemTime", "UNIX_EPOCH", "thread::sleep", "clock_gettime"] {
                assert!(
                    !code.contains(needle),
                    "{file} uses `{needle}` outside its tests; read time through clock::Clock"
                );
            }
        }
    }
}
