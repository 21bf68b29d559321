//! Progress lines on stderr while apply works: what step, how long so far.

use std::time::Instant;

pub struct Progress {
    start: Instant,
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            start: Instant::now(),
            enabled,
        }
    }

    pub fn step(&self, message: impl AsRef<str>) {
        if self.enabled {
            eprintln!(
                "[{:>6.3}s] {}",
                self.start.elapsed().as_secs_f64(),
                message.as_ref()
            );
        }
    }
}
