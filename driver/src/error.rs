//! The two kinds of failure the CLI distinguishes, mapped to exit codes in
//! `cli::main`: a usage or configuration error (exit 2: nothing ran, nothing
//! was written) and a run that ran but failed (exit 1: I/O or verification
//! errors, written into the results).

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run ran but failed (I/O errors, verification errors).
pub const EXIT_FAILED: i32 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;

/// Anything that stops mlpdrive before or during a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: CLI, config, target URI. Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The run could not complete or completed with failures. Exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    pub fn failed(msg: impl Into<String>) -> Error {
        Error::Failed(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Failed(_) => EXIT_FAILED,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
