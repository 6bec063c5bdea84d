//! The run's clock: every workload and the engine read time through it, so a
//! run can later be driven by a simulated clock instead of the host's.
//!
//! Rule for workload code: never call `Instant::now()`, `SystemTime::now()`
//! or `thread::sleep` directly. Use the `now` the engine passes to
//! [`crate::engine::OpSource::next`], a completion's timestamps, or this
//! clock; wait for time with [`crate::engine::Next::WaitUntil`].
//!
//! Times stay `std::time::Instant`s on every clock, so the target trait and
//! the recorder do not change with the clock kind.

use std::time::Instant;

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
}

impl Clock {
    /// The host's monotonic clock.
    pub fn real() -> Self {
        Self { kind: Kind::Real }
    }

    /// The current time on this clock.
    pub fn now(&self) -> Instant {
        match self.kind {
            Kind::Real => Instant::now(),
        }
    }

    /// Blocks until `t` on this clock (returns at once if `t` has passed).
    pub fn sleep_until(&self, t: Instant) {
        match self.kind {
            Kind::Real => {
                let now = Instant::now();
                if t > now {
                    std::thread::sleep(t - now);
                }
            }
        }
    }

    /// True when time is simulated (a run on a virtual clock).
    pub fn is_virtual(&self) -> bool {
        match self.kind {
            Kind::Real => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    }
}
