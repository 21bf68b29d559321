//! Progress lines on stderr while apply works: what step, how long so far.
//! Long work (slots moving) also reports as it goes: one line rewritten in
//! place on a terminal, plain lines at most every few seconds otherwise
//! (logs, CI), so a log never fills with carriage returns.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) progress line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    start: Instant,
    enabled: bool,
    terminal: bool,
    /// When the last live line was written, and whether one is on screen.
    live: Mutex<(Option<Instant>, bool)>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            start: Instant::now(),
            enabled,
            terminal: std::io::stderr().is_terminal(),
            live: Mutex::new((None, false)),
        }
    }

    pub fn step(&self, message: impl AsRef<str>) {
        if self.enabled {
            self.end_live();
            eprintln!(
                "[{:>6.3}s] {}",
                self.start.elapsed().as_secs_f64(),
                message.as_ref()
            );
        }
    }

    /// A state of long work: on a terminal the line is rewritten in place;
    /// otherwise printed at most every [`PLAIN_EVERY`].
    pub fn live(&self, message: impl AsRef<str>) {
        if !self.enabled {
            return;
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let stamp = self.start.elapsed().as_secs_f64();
        if self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K[{stamp:>6.3}s] {}", message.as_ref());
            let _ = err.flush();
            *live = (Some(now), true);
        } else if live.0.is_none_or(|t| now.duration_since(t) >= PLAIN_EVERY) {
            eprintln!("[{stamp:>6.3}s] {}", message.as_ref());
            live.0 = Some(now);
        }
    }

    /// Ends a live line left on a terminal, so the next line starts clean.
    fn end_live(&self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.1 {
            eprintln!();
            *live = (None, false);
        }
    }
}
