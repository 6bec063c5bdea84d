//! Client-side cost of a run: CPU time and peak memory of the mlpdrive
//! process, from getrusage(RUSAGE_SELF).
//!
//! A storage benchmark that burns a core per GB/s is measuring itself, so
//! every result carries the driver's own CPU seconds (user and system) and
//! its peak resident set; `summary.txt` turns them into CPU-seconds per GiB
//! moved, the figure to compare with fio.

/// Resource usage of this process (totals since it started, or a difference
/// between two such totals, see [`Usage::since`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time in user mode, seconds.
    pub cpu_user_s: f64,
    /// CPU time in the kernel on the process's behalf, seconds.
    pub cpu_sys_s: f64,
    /// Peak resident set size, bytes.
    pub peak_rss_bytes: u64,
}

impl Usage {
    /// CPU time spent between `start` and `self`; the peak RSS is this
    /// (later) sample's, since a peak cannot be differenced.
    pub fn since(&self, start: &Usage) -> Usage {
        Usage {
            cpu_user_s: (self.cpu_user_s - start.cpu_user_s).max(0.0),
            cpu_sys_s: (self.cpu_sys_s - start.cpu_sys_s).max(0.0),
            peak_rss_bytes: self.peak_rss_bytes,
        }
    }
}

/// This process's totals (all threads). Returns zeros if getrusage fails,
/// which it cannot for RUSAGE_SELF with a valid buffer.
pub fn self_usage() -> Usage {
    // SAFETY: `rusage` is plain old data, for which all-zero bytes is a valid
    // value; getrusage only writes into the buffer we pass, which lives for
    // the whole call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF is a valid `who`, `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Usage::default();
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Usage {
        cpu_user_s: secs(ru.ru_utime),
        cpu_sys_s: secs(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_bytes: u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_loop_shows_up_as_user_time() {
        // Spin until 100 ms of user time has been charged, with a generous
        // wall-clock bound: on a loaded machine the scheduler delays the
        // spin but cannot hide it from getrusage.
        let start = self_usage();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        let mut d = self_usage().since(&start);
        while d.cpu_user_s < 0.1 && t0.elapsed() < std::time::Duration::from_secs(30) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            d = self_usage().since(&start);
        }
        assert!(d.cpu_user_s >= 0.1, "30 s of spinning charged only {d:?}");
    }

    #[test]
    fn peak_rss_is_in_bytes_and_grows_with_touched_memory() {
        let before = self_usage().peak_rss_bytes;
        assert!(before > 1024 * 1024, "a running test binary uses more than 1 MiB: {before}");
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        let after = self_usage().peak_rss_bytes;
        assert!(after >= 64 << 20, "peak RSS {after} after touching 64 MiB");
    }

    #[test]
    fn since_differences_cpu_and_keeps_the_later_peak() {
        let a = Usage { cpu_user_s: 1.0, cpu_sys_s: 0.5, peak_rss_bytes: 10 };
        let b = Usage { cpu_user_s: 3.5, cpu_sys_s: 0.75, peak_rss_bytes: 40 };
        assert_eq!(b.since(&a), Usage { cpu_user_s: 2.5, cpu_sys_s: 0.25, peak_rss_bytes: 40 });
    }
}
