//! End-to-end tests: they run the real `mlpdrive` binary.
