//! Errors in `check`'s input files: each names the file, and where it can the
//! line and the column, so the user can open the file at the bad spot. All of
//! them are usage errors (exit 2): the input cannot be judged.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Where in an input file something is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: PathBuf,
    /// 1-based line number, when the problem is in one line.
    pub line: Option<u64>,
    /// 1-based column (field) number and the column's header name.
    pub column: Option<(usize, String)>,
    pub message: String,
}

impl InputError {
    pub fn file(file: &Path, message: impl Into<String>) -> InputError {
        InputError { file: file.to_path_buf(), line: None, column: None, message: message.into() }
    }

    pub fn line(file: &Path, line: u64, message: impl Into<String>) -> InputError {
        InputError { file: file.to_path_buf(), line: Some(line), column: None, message: message.into() }
    }

    pub fn cell(file: &Path, line: u64, column: usize, name: &str, message: impl Into<String>) -> InputError {
        InputError {
            file: file.to_path_buf(),
            line: Some(line),
            column: Some((column, name.to_string())),
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some((col, name)) = &self.column {
            write!(f, ", column {col} ({name})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl From<InputError> for Error {
    fn from(e: InputError) -> Error {
        Error::usage(e.to_string())
    }
}
