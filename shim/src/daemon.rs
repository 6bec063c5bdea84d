//! `--daemon`: fork before any thread exists, detach, and tell the parent
//! when the mount is ready (or why it failed) through a pipe.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

/// One side of a fork.
pub enum Daemon {
    /// The process that was started; it waits for the child's word.
    Parent {
        /// The child's pid.
        pid: u32,
        /// Read end of the readiness pipe.
        ready: File,
    },
    /// The detached child that will serve the mount.
    Child {
        /// Write end of the readiness pipe.
        ready: Option<File>,
    },
}

/// Forks. The child starts a new session and points stdin at /dev/null and
/// stdout/stderr at `log` (or /dev/null). Call only while the process has a
/// single thread.
pub fn fork_daemon(log: Option<&Path>) -> io::Result<Daemon> {
    let out = match log {
        Some(p) => File::options().create(true).append(true).open(p)?,
        None => File::options().write(true).open("/dev/null")?,
    };
    let null_in = File::open("/dev/null")?;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let (rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single-threaded process, so the child
    // does not inherit locks held by other threads.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        drop(wr);
        return Ok(Daemon::Parent { pid: pid as u32, ready: rd });
    }
    drop(rd);
    // SAFETY: setsid and dup2 on descriptors we own are async-signal-safe
    // and valid in the child.
    unsafe {
        libc::setsid();
        libc::dup2(null_in.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    Ok(Daemon::Child { ready: Some(wr) })
}

impl Daemon {
    /// Parent: waits for the child's message (`Ok(text)` once mounted).
    pub fn wait_ready(self) -> Result<String, String> {
        let Daemon::Parent { pid, mut ready } = self else { return Err("not the parent".into()) };
        let mut msg = String::new();
        let _ = ready.read_to_string(&mut msg);
        match msg.split_once(' ') {
            Some(("ok", text)) => Ok(text.trim_end().to_string()),
            Some(("err", text)) => Err(text.trim_end().to_string()),
            _ => Err(format!("the shim daemon (pid {pid}) exited before the mount was ready")),
        }
    }

    /// Child: tells the parent how the mount went (once).
    pub fn report(&mut self, result: Result<&str, &str>) {
        if let Daemon::Child { ready } = self
            && let Some(mut f) = ready.take()
        {
            let msg = match result {
                Ok(t) => format!("ok {t}\n"),
                Err(t) => format!("err {t}\n"),
            };
            let _ = f.write_all(msg.as_bytes());
        }
    }
}
