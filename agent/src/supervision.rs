//! Supervision settings: what the state machine (`supervisor::state`) is
//! tuned by and what an instance spec's `supervision` table becomes. A leaf
//! module, so specs need not import the supervisor that uses them.

use std::time::Duration;

/// Per-instance supervision settings. The defaults suit Redis: a crash is
/// restarted at once, a crash loop backs off to one try every 5 s and gives
/// up after 10 quick failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a start may take to answer PING (loading a large data set
    /// answers -LOADING, which still counts as starting).
    pub start_timeout: Duration,
    /// Consecutive failed starts before FATAL.
    pub start_retries: u32,
    /// Delay before the second restart of a row; doubles each time after.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// A process that lived this long resets the failure count, so its next
    /// crash is restarted at once (supervisord's `startsecs`, 1 s too).
    pub stable_after: Duration,
    /// SIGTERM, then SIGKILL to the process group after this long.
    pub stop_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            start_timeout: Duration::from_secs(60),
            start_retries: 10,
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            stable_after: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(10),
        }
    }
}
