//! Time for the device model: a real monotonic clock and a virtual clock.
//!
//! Every component that needs "now" takes a [`Clock`], never the OS directly,
//! so a whole run can switch to simulated time (TigerBeetle's `Time`
//! interface is the model here). Time is nanoseconds since the clock's own
//! epoch as a `u64` (about 584 years of range), which is what the device
//! model's arithmetic works in.
//!
//! - [`RealClock`] is monotonic wall time; its epoch is when it was created.
//! - [`VirtualClock`] holds a number and nothing else. It moves only when a
//!   discrete-event scheduler advances it, so a run driven by it is
//!   deterministic and simulated minutes take as long as the computation.
//!
//! This is the only module of the crate that reads real time; `VirtualClock`
//! cannot, because its only state is an atomic integer and none of its
//! methods touch `std::time`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of "now" in nanoseconds since the clock's epoch.
pub trait Clock: Send + Sync {
    /// Nanoseconds since this clock's epoch; never decreases.
    fn now_ns(&self) -> u64;

    /// Returns once `now_ns() >= deadline_ns`.
    ///
    /// A real clock sleeps. A virtual clock is advanced by its one caller,
    /// the discrete-event scheduler, so "sleeping" there means jumping time
    /// forward to the deadline (never backwards).
    fn sleep_until(&self, deadline_ns: u64);
}

/// Monotonic wall time; the epoch is the moment of [`RealClock::new`].
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    epoch: Instant,
}

impl RealClock {
    /// A clock whose `now_ns()` is 0 now.
    pub fn new() -> RealClock {
        RealClock { epoch: Instant::now() }
    }
}

impl Default for RealClock {
    fn default() -> RealClock {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn now_ns(&self) -> u64 {
        // Saturates after ~584 years of uptime.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn sleep_until(&self, deadline_ns: u64) {
        // `thread::sleep` may wake early on some platforms: loop until the
        // deadline has really passed.
        loop {
            let now_ns = self.now_ns();
            if now_ns >= deadline_ns {
                return;
            }
            std::thread::sleep(Duration::from_nanos(deadline_ns - now_ns));
        }
    }
}

/// Simulated time: a counter that only a scheduler moves forward.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now_ns: AtomicU64,
}

impl VirtualClock {
    /// A virtual clock at time 0.
    pub fn new() -> VirtualClock {
        VirtualClock::starting_at(0)
    }

    /// A virtual clock at `now_ns`.
    pub fn starting_at(now_ns: u64) -> VirtualClock {
        VirtualClock { now_ns: AtomicU64::new(now_ns) }
    }

    /// Moves time forward to `t_ns`; a `t_ns` in the past leaves it as is
    /// (time never goes backwards). Returns the new time.
    pub fn advance_to(&self, t_ns: u64) -> u64 {
        let previous_ns = self.now_ns.fetch_max(t_ns, Ordering::AcqRel);
        previous_ns.max(t_ns)
    }

    /// Moves time forward by `delta_ns` (saturating). Returns the new time.
    pub fn advance_by(&self, delta_ns: u64) -> u64 {
        let mut current_ns = self.now_ns.load(Ordering::Acquire);
        loop {
            let next_ns = current_ns.saturating_add(delta_ns);
            match self.now_ns.compare_exchange_weak(current_ns, next_ns, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return next_ns,
                Err(seen_ns) => current_ns = seen_ns,
            }
        }
    }
}

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::Acquire)
    }

    fn sleep_until(&self, deadline_ns: u64) {
        self.advance_to(deadline_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_advanced() {
        let clock = VirtualClock::new();
        assert_eq!(clock.now_ns(), 0);
        // Real time passes; virtual time does not.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now_ns(), 0);
        assert_eq!(clock.advance_by(1_500), 1_500);
        assert_eq!(clock.advance_to(1_000), 1_500, "time never goes backwards");
        clock.sleep_until(10_000_000_000);
        assert_eq!(clock.now_ns(), 10_000_000_000, "a simulated 10 s sleep is a jump");
        clock.sleep_until(5);
        assert_eq!(clock.now_ns(), 10_000_000_000);
    }

    #[test]
    fn real_clock_is_monotonic_and_sleeps() {
        let clock = RealClock::new();
        let start_ns = clock.now_ns();
        clock.sleep_until(start_ns + 2_000_000);
        let end_ns = clock.now_ns();
        assert!(end_ns >= start_ns + 2_000_000, "slept {} ns", end_ns - start_ns);
    }
}
