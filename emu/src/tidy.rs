//! Checks on the crate's own source: only `clock.rs` may read real time and
//! only `prng.rs` may create random generators. This keeps a virtual-clock
//! run deterministic by construction rather than by care.

/// Every source file except this one and the two allowed modules.
const CHECKED: &[(&str, &str)] = &[
    ("lib.rs", include_str!("lib.rs")),
    ("dist.rs", include_str!("dist.rs")),
    ("fault.rs", include_str!("fault.rs")),
    ("model.rs", include_str!("model.rs")),
    ("profile.rs", include_str!("profile.rs")),
    ("units.rs", include_str!("units.rs")),
    ("nbd/mod.rs", include_str!("nbd/mod.rs")),
    ("nbd/protocol.rs", include_str!("nbd/protocol.rs")),
    ("nbd/export.rs", include_str!("nbd/export.rs")),
    ("nbd/server.rs", include_str!("nbd/server.rs")),
];

#[test]
fn only_clock_reads_time_and_only_prng_makes_randomness() {
    let time = ["Instant", "SystemTime", "std::time", "UNIX_EPOCH", "clock_gettime"];
    let random = ["Xoshiro", "rand_core", "SeedableRng", "getrandom", "thread_rng", "RandomState"];
    for (file, text) in CHECKED {
        for needle in time.iter().chain(&random) {
            assert!(
                !text.contains(needle),
                "{file} mentions `{needle}`: only clock.rs reads time, only prng.rs makes randomness"
            );
        }
    }
    let clock = include_str!("clock.rs");
    let virtual_impl = clock.split("pub struct VirtualClock").nth(1).unwrap_or("");
    let virtual_impl = virtual_impl.split("#[cfg(test)]").next().unwrap_or("");
    assert!(!virtual_impl.contains("Instant") && !virtual_impl.contains("SystemTime"), "VirtualClock reads real time");
    assert!(virtual_impl.contains("now_ns: AtomicU64"), "VirtualClock's state should be a counter only");
}
