//! A small parallel map over indexes on scoped threads (the build and the
//! ground truth use every core). Work is handed out in small chunks from an
//! atomic counter, so uneven items balance; results come back in index
//! order, so the output never depends on the thread count or timing.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Items claimed at a time by one thread.
const CHUNK: usize = 4;

/// Threads to use when the config says 0 (all cores).
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// `f(state, i)` for every `i` in `0..n`, one thread per element of
/// `states` (each thread owns its state: scratch buffers), in index order.
pub fn map_with<S: Send, T: Send>(states: &mut [S], n: usize, f: impl Fn(&mut S, usize) -> T + Sync) -> Vec<T> {
    assert!(!states.is_empty(), "map_with needs at least one thread state");
    if states.len() == 1 || n <= CHUNK {
        let s = &mut states[0];
        return (0..n).map(|i| f(s, i)).collect();
    }
    let next = AtomicUsize::new(0);
    let (next, f) = (&next, &f);
    let parts: Vec<Vec<(usize, T)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .iter_mut()
            .map(|s| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= n {
                            break out;
                        }
                        for i in start..(start + CHUNK).min(n) {
                            out.push((i, f(s, i)));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (i, t) in parts.into_iter().flatten() {
        slots[i] = Some(t);
    }
    slots.into_iter().map(|t| t.expect("every index was claimed once")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_in_index_order_for_any_thread_count() {
        for threads in [1, 2, 5] {
            let mut states = vec![0u64; threads];
            let out = map_with(&mut states, 1003, |calls, i| {
                *calls += 1;
                i * i
            });
            assert_eq!(out, (0..1003).map(|i| i * i).collect::<Vec<_>>());
            assert_eq!(states.iter().sum::<u64>(), 1003);
        }
    }
}
