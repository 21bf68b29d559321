//! Instance states (supervisord's names and meanings) and the back-off policy.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not running, and not supposed to be.
    Stopped,
    /// Spawned; not yet answering PING.
    Starting,
    /// Answers PING.
    Running,
    /// Exited unexpectedly; waiting to be started again.
    Backoff,
    /// Asked to stop; the process is still there.
    Stopping,
    /// Exited and will not be restarted by itself.
    Exited,
    /// Failed to start too many times in a row; needs an operator.
    Fatal,
}

impl State {
    /// Whether a process may exist in this state.
    pub fn has_process(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Delay before restart number `failures` (1-based) of a row of failures. The
/// first restart is immediate: a crashed Redis should be back in milliseconds.
/// Later ones double from 50 ms up to 5 s, stretched by up to 50% of jitter.
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(16);
    let base = FIRST_RETRY.saturating_mul(1 << exp).min(MAX_DELAY);
    base.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_then_doubles_to_a_cap() {
        let table = [
            (1, 0),
            (2, 50),
            (3, 100),
            (4, 200),
            (5, 400),
            (8, 3200),
            (9, 5000),
            (30, 5000),
        ];
        for (failures, ms) in table {
            assert_eq!(
                backoff_delay(failures, 0.0),
                Duration::from_millis(ms),
                "failures={failures}"
            );
        }
    }

    #[test]
    fn jitter_stretches_but_never_past_the_cap() {
        assert_eq!(backoff_delay(2, 1.0), Duration::from_millis(75));
        assert_eq!(backoff_delay(20, 1.0), MAX_DELAY);
    }
}
