//! Live progress on stderr: an indicatif bar when stderr is a terminal, a
//! plain line every `progress_interval` otherwise (CI logs), nothing with
//! `--quiet`. Rates are over the last sampling interval.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::recorder::CounterSnapshot;

pub struct Progress {
    mode: Mode,
    plain_every: Duration,
    last_plain: Option<Instant>,
}

enum Mode {
    Quiet,
    Bar(ProgressBar),
    Plain,
}

/// Per-second rates derived from two counter snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub read_iops: f64,
    pub read_bytes_per_s: f64,
    pub write_iops: f64,
    pub write_bytes_per_s: f64,
    pub errors: u64,
}

impl Rates {
    pub fn between(a: &CounterSnapshot, b: &CounterSnapshot, secs: f64) -> Rates {
        let per = |x: u64, y: u64| if secs > 0.0 { y.saturating_sub(x) as f64 / secs } else { 0.0 };
        Rates {
            read_iops: per(a.read_ops, b.read_ops),
            read_bytes_per_s: per(a.read_bytes, b.read_bytes),
            write_iops: per(a.write_ops, b.write_ops),
            write_bytes_per_s: per(a.write_bytes, b.write_bytes),
            errors: b.errors,
        }
    }

    fn text(&self) -> String {
        let mut parts = Vec::new();
        if self.read_iops > 0.0 {
            parts.push(format!("read {} IOPS {}/s", si(self.read_iops), mib(self.read_bytes_per_s)));
        }
        if self.write_iops > 0.0 {
            parts.push(format!("write {} IOPS {}/s", si(self.write_iops), mib(self.write_bytes_per_s)));
        }
        if parts.is_empty() {
            parts.push("no I/O this interval".into());
        }
        if self.errors > 0 {
            parts.push(format!("ERRORS {}", self.errors));
        }
        parts.join("  ")
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn mib(bytes_per_s: f64) -> String {
    format!("{:.1} MiB", bytes_per_s / (1024.0 * 1024.0))
}

impl Progress {
    pub fn new(quiet: bool, plain_every: Duration, duration: Option<Duration>) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = match duration {
                Some(d) => {
                    let b = ProgressBar::new(d.as_secs().max(1));
                    b.set_style(
                        ProgressStyle::with_template("{prefix:>8} [{bar:20}] {pos:>3}/{len}s {wide_msg}")
                            .expect("static template")
                            .progress_chars("=> "),
                    );
                    b
                }
                None => {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template("{prefix:>8} {spinner} {elapsed} {wide_msg}")
                            .expect("static template"),
                    );
                    b
                }
            };
            b_draw(&bar);
            Mode::Bar(bar)
        } else {
            Mode::Plain
        };
        Progress { mode, plain_every, last_plain: None }
    }

    /// Called about once a second.
    pub fn update(&mut self, phase: &str, elapsed_s: f64, rates: &Rates) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bar(b) => {
                b.set_prefix(phase.to_string());
                if phase == "measure" {
                    b.set_position(elapsed_s as u64);
                }
                b.set_message(rates.text());
            }
            Mode::Plain => {
                let now = Instant::now();
                if self.last_plain.is_none_or(|t| now - t >= self.plain_every) {
                    self.last_plain = Some(now);
                    eprintln!("mlpdrive: [{phase}] {elapsed_s:.0}s  {}", rates.text());
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if let Mode::Bar(b) = &self.mode {
            b.finish_and_clear();
        }
    }

    /// Prints a message without tearing the bar.
    pub fn println(&self, msg: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bar(b) => b.println(msg),
            Mode::Plain => eprintln!("{msg}"),
        }
    }
}

fn b_draw(b: &ProgressBar) {
    b.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
}
