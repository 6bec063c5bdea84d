//! The `mlpdrive` binary: everything lives in the library; this only maps
//! the outcome to the process exit code.

fn main() {
    std::process::exit(mlpdrive::cli::main());
}
