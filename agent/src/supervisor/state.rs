//! The supervision state machine: supervisord's states and meanings, as a
//! pure function of (state, event, now). No IO: the caller performs the
//! returned [`Action`]s and feeds back what happened as [`Event`]s.
//!
//! | state    | meaning                                                    |
//! |----------|------------------------------------------------------------|
//! | STOPPED  | not running, and not supposed to be                        |
//! | STARTING | spawned, not yet answering PING (a `-LOADING` reply counts as starting) |
//! | RUNNING  | answers PING                                               |
//! | BACKOFF  | exited unexpectedly; waiting before the next start         |
//! | STOPPING | asked to stop; the process is still there                  |
//! | EXITED   | exited with status 0 on its own (e.g. SHUTDOWN); not restarted |
//! | FATAL    | failed `start_retries` times in a row, or cannot be spawned; needs an operator |

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
    /// A master that keeps no data on disk, down while a replica may still
    /// hold its data set: starting it empty would let that replica copy the
    /// emptiness. The handover is retried with back-off until a replica
    /// takes over, or an operator accepts the loss (`paddock recover`).
    Held,
}

/// The state as the wire model names it.
impl From<State> for paddock_model::InstanceState {
    fn from(s: State) -> Self {
        use paddock_model::InstanceState as I;
        match s {
            State::Stopped => I::Stopped,
            State::Starting => I::Starting,
            State::Running => I::Running,
            State::Backoff => I::Backoff,
            State::Stopping => I::Stopping,
            State::Exited => I::Exited,
            State::Fatal => I::Fatal,
            State::Held => I::Held,
        }
    }
}

impl State {
    /// Whether a process may exist in this state.
    pub fn has_process(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

pub use crate::supervision::Settings;

/// How a process ended, as the process side saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// "exited with status 1", "killed by SIGKILL", ...
    pub description: String,
    /// Exit status 0: Redis shut down on request (SHUTDOWN, SIGTERM).
    pub clean: bool,
    /// The last lines of the instance's log, for a FATAL reason.
    pub log_tail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An operator (or autostart) wants it running.
    Start,
    /// An operator wants it stopped.
    Stop,
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        error: String,
    },
    /// A process of ours found alive after an agent restart.
    Adopted {
        pid: u32,
    },
    /// It answered PING.
    Ready,
    StartTimedOut,
    Exited(ExitReport),
    RetryDue,
    StopTimedOut,
    /// A replica took over this cluster master's slots: it may start.
    HandedOver,
    /// No replica took over. `hold`: starting it would risk wiping them (it
    /// keeps no data and a replica may hold the data set); otherwise it just
    /// starts.
    HandoverFailed {
        error: String,
        hold: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a process (the generation has been bumped for it).
    Spawn,
    /// Signal the process group.
    Signal(Signal),
    /// Deliver [`Event::RetryDue`] after this long.
    RetryAfter(Duration),
    /// Deliver [`Event::StopTimedOut`] after this long.
    StopTimeoutAfter(Duration),
    /// The state settled: answer whoever waits on a start or stop.
    Settled,
    /// Try the handover again (HELD); its outcome comes back as
    /// [`Event::HandedOver`] or [`Event::HandoverFailed`].
    Handover,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub state: State,
    pub pid: Option<u32>,
    /// Bumped for every spawn and every cancelled back-off; events created
    /// under another generation are stale and ignored.
    pub generation: u64,
    /// Failed starts in a row.
    pub failures: u32,
    /// Restarts after unexpected exits, over the agent's lifetime.
    pub restarts: u32,
    pub started_at: Option<Instant>,
    pub last_exit: Option<String>,
    /// Why the instance is FATAL.
    pub fatal_reason: Option<String>,
    start_timed_out: bool,
    /// Handovers tried in a row while HELD (sets the retry back-off).
    pub hold_attempts: u32,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: State::Stopped,
            pid: None,
            generation: 0,
            failures: 0,
            restarts: 0,
            started_at: None,
            last_exit: None,
            fatal_reason: None,
            start_timed_out: false,
            hold_attempts: 0,
        }
    }
}

impl Machine {
    fn spawn(&mut self) -> Action {
        self.generation += 1;
        self.state = State::Starting;
        self.pid = None;
        self.start_timed_out = false;
        Action::Spawn
    }

    /// Applies `event` (created under `generation`) at time `now`. `jitter`
    /// in [0, 1) stretches back-off delays so instances do not restart in
    /// lockstep.
    pub fn next(
        &mut self,
        event: Event,
        generation: u64,
        now: Instant,
        settings: &Settings,
        jitter: f64,
    ) -> Vec<Action> {
        use State::*;
        let current = generation == self.generation;
        match (self.state, event) {
            (Stopped | Exited | Fatal | Backoff | Held, Event::Start) => {
                self.failures = 0;
                self.fatal_reason = None;
                self.hold_attempts = 0;
                vec![self.spawn()]
            }
            (Stopped | Exited | Fatal, Event::Adopted { pid }) => {
                self.state = Starting;
                self.pid = Some(pid);
                self.started_at = Some(now);
                vec![]
            }
            (Starting, Event::Spawned { pid }) if current => {
                self.pid = Some(pid);
                self.started_at = Some(now);
                vec![]
            }
            (Starting | Held, Event::HandedOver) if current => {
                self.hold_attempts = 0;
                self.fatal_reason = None;
                vec![self.spawn()]
            }
            (Starting | Held, Event::HandoverFailed { hold: false, .. }) if current => {
                vec![self.spawn()]
            }
            (Starting | Held, Event::HandoverFailed { error, .. }) if current => self.hold(&error),
            (Starting, Event::SpawnFailed { error }) if current => {
                self.state = Fatal;
                self.fatal_reason = Some(format!("cannot start redis-server: {error}"));
                vec![Action::Settled]
            }
            (Starting, Event::Ready) if current => {
                self.state = Running;
                vec![Action::Settled]
            }
            (Starting, Event::StartTimedOut) if current => {
                self.start_timed_out = true;
                vec![Action::Signal(Signal::Kill)]
            }
            (Starting | Running, Event::Exited(report)) if current => {
                self.exited(report, now, settings, jitter)
            }
            (Backoff, Event::RetryDue) if current => vec![self.spawn()],
            // It stays HELD while the handover is tried again.
            (Held, Event::RetryDue) if current => {
                self.generation += 1;
                vec![Action::Handover]
            }
            (Starting, Event::Stop) if self.pid.is_none() => {
                // Nothing spawned yet (a handover in progress): invalidate it.
                self.generation += 1;
                self.state = Stopped;
                vec![Action::Settled]
            }
            (Starting | Running, Event::Stop) => {
                self.state = Stopping;
                vec![
                    Action::Signal(Signal::Term),
                    Action::StopTimeoutAfter(settings.stop_timeout),
                ]
            }
            (Backoff | Held, Event::Stop) => {
                // Invalidates the pending RetryDue.
                self.generation += 1;
                self.state = Stopped;
                vec![Action::Settled]
            }
            (Stopped | Exited | Fatal, Event::Stop) => {
                self.state = Stopped;
                vec![Action::Settled]
            }
            (Stopping, Event::Exited(report)) if current => {
                self.state = Stopped;
                self.pid = None;
                self.last_exit = Some(report.description);
                vec![Action::Settled]
            }
            (Stopping, Event::StopTimedOut) if current => vec![Action::Signal(Signal::Kill)],
            _ => vec![],
        }
    }

    /// No replica took over and starting would risk wiping them: HELD,
    /// the handover retried later.
    fn hold(&mut self, error: &str) -> Vec<Action> {
        self.state = State::Held;
        self.hold_attempts += 1;
        let delay = hold_retry_delay(self.hold_attempts);
        self.fatal_reason = Some(format!(
            "held: a master that keeps no data on disk is not started empty while a replica may still hold its data ({error}); retrying the handover every {} ms until a replica takes over; `paddock recover --accept-data-loss` starts it empty",
            delay.as_millis()
        ));
        vec![Action::RetryAfter(delay), Action::Settled]
    }

    fn exited(
        &mut self,
        report: ExitReport,
        now: Instant,
        settings: &Settings,
        jitter: f64,
    ) -> Vec<Action> {
        let was_running = self.state == State::Running;
        self.pid = None;
        let description = if self.start_timed_out {
            format!(
                "did not answer PING within {} s, killed",
                settings.start_timeout.as_secs()
            )
        } else {
            report.description.clone()
        };
        self.last_exit = Some(description.clone());
        if was_running && report.clean {
            self.state = State::Exited;
            return vec![Action::Settled];
        }
        let lived = self
            .started_at
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        if was_running && lived >= settings.stable_after {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures > settings.start_retries {
            self.state = State::Fatal;
            let mut reason = format!("{description} ({} failed starts in a row)", self.failures);
            if !report.log_tail.is_empty() {
                reason.push_str("; last log lines:\n");
                reason.push_str(&report.log_tail.join("\n"));
            }
            self.fatal_reason = Some(reason);
            return vec![Action::Settled];
        }
        self.restarts += 1;
        let delay = backoff_delay(self.failures, jitter, settings);
        if delay.is_zero() {
            return vec![self.spawn()];
        }
        self.state = State::Backoff;
        vec![Action::RetryAfter(delay), Action::Settled]
    }
}

/// Delay before handover try number `attempts` (1-based) of a HELD
/// instance: soon at first (a frozen replica often thaws within seconds),
/// then every 2 s, so the shard serves again soon after a replica answers.
pub fn hold_retry_delay(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(4);
    Duration::from_millis(250u64 << exp).min(Duration::from_secs(2))
}

/// Delay before restart number `failures` (1-based) of a row of failures. The
/// first restart is immediate: a crashed Redis should be back in milliseconds.
/// Later ones double from `backoff_first` up to `backoff_max`, stretched by up
/// to 50% of jitter.
pub fn backoff_delay(failures: u32, jitter: f64, s: &Settings) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(16);
    let base = s.backoff_first.saturating_mul(1 << exp).min(s.backoff_max);
    base.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0))
        .min(s.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use State::*;

    fn exit(description: &str, clean: bool) -> Event {
        Event::Exited(ExitReport {
            description: description.into(),
            clean,
            log_tail: vec!["# Fatal error, can't open config file".into()],
        })
    }

    fn settings() -> Settings {
        Settings::default()
    }

    /// Drives a machine through (event, expected state, expected actions) rows.
    fn run(m: &mut Machine, t0: Instant, rows: &[(u64, Event, State, Vec<Action>)]) {
        for (i, (at_ms, event, state, actions)) in rows.iter().enumerate() {
            let now = t0 + Duration::from_millis(*at_ms);
            let got = m.next(event.clone(), m.generation, now, &settings(), 0.0);
            assert_eq!(&got, actions, "row {i}: {event:?}");
            assert_eq!(m.state, *state, "row {i}: {event:?}");
        }
    }

    #[test]
    fn start_ready_crash_restart_stop() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        run(
            &mut m,
            t0,
            &[
                (0, Event::Start, Starting, vec![Spawn]),
                (1, Event::Spawned { pid: 10 }, Starting, vec![]),
                (20, Event::Ready, Running, vec![Settled]),
                // A crash after a while: restarted at once, no back-off.
                (
                    60_000,
                    exit("killed by SIGKILL", false),
                    Starting,
                    vec![Spawn],
                ),
                (60_001, Event::Spawned { pid: 11 }, Starting, vec![]),
                (60_020, Event::Ready, Running, vec![Settled]),
                (
                    70_000,
                    Event::Stop,
                    Stopping,
                    vec![
                        Signal(super::Signal::Term),
                        StopTimeoutAfter(Duration::from_secs(10)),
                    ],
                ),
                (
                    80_000,
                    Event::StopTimedOut,
                    Stopping,
                    vec![Signal(super::Signal::Kill)],
                ),
                (
                    80_001,
                    exit("killed by SIGKILL", false),
                    Stopped,
                    vec![Settled],
                ),
            ],
        );
        assert_eq!(m.restarts, 1);
        assert_eq!(m.pid, None);
        assert_eq!(m.last_exit.as_deref(), Some("killed by SIGKILL"));
    }

    #[test]
    fn crash_loop_backs_off_then_goes_fatal_with_the_log() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        let s = settings();
        m.next(Event::Start, 0, t0, &s, 0.0);
        let mut delays = Vec::new();
        for i in 0..=s.start_retries {
            let now = t0 + Duration::from_millis(i as u64 * 10);
            let g = m.generation;
            m.next(Event::Spawned { pid: 100 + i }, g, now, &s, 0.0);
            let actions = m.next(exit("exited with status 1", false), g, now, &s, 0.0);
            match actions.as_slice() {
                [Spawn] => delays.push(Duration::ZERO),
                [RetryAfter(d), Settled] => {
                    assert_eq!(m.state, Backoff);
                    delays.push(*d);
                    let g = m.generation;
                    assert_eq!(m.next(Event::RetryDue, g, now, &s, 0.0), vec![Spawn]);
                }
                [Settled] => assert_eq!(m.state, Fatal),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(m.state, Fatal);
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let reason = m.fatal_reason.clone().unwrap();
        assert!(
            reason.starts_with("exited with status 1 (11 failed starts in a row)"),
            "{reason}"
        );
        assert!(reason.contains("can't open config file"), "{reason}");
        // An operator's start clears FATAL and tries again.
        assert_eq!(m.next(Event::Start, m.generation, t0, &s, 0.0), vec![Spawn]);
        assert_eq!(m.failures, 0);
    }

    #[test]
    fn a_stable_run_resets_the_failure_count() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        let s = settings();
        m.failures = 5;
        m.state = Running;
        m.started_at = Some(t0);
        let actions = m.next(
            exit("killed by SIGSEGV", false),
            0,
            t0 + s.stable_after,
            &s,
            0.0,
        );
        assert_eq!(
            actions,
            vec![Spawn],
            "first failure after a stable run: immediate"
        );
        assert_eq!(m.failures, 1);
    }

    #[test]
    fn clean_exit_is_not_restarted() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        run(
            &mut m,
            t0,
            &[
                (0, Event::Start, Starting, vec![Spawn]),
                (1, Event::Spawned { pid: 10 }, Starting, vec![]),
                (2, Event::Ready, Running, vec![Settled]),
                (3, exit("exited with status 0", true), Exited, vec![Settled]),
            ],
        );
    }

    #[test]
    fn stale_events_of_an_earlier_process_are_ignored() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        let s = settings();
        m.next(Event::Start, 0, t0, &s, 0.0);
        let old = m.generation;
        m.next(Event::Spawned { pid: 1 }, old, t0, &s, 0.0);
        m.next(Event::Ready, old, t0, &s, 0.0);
        m.next(exit("killed by SIGKILL", false), old, t0, &s, 0.0);
        assert_eq!(m.state, Starting);
        // The old process's readiness probe or exit must not touch the new one.
        assert_eq!(m.next(Event::Ready, old, t0, &s, 0.0), vec![]);
        assert_eq!(
            m.next(exit("killed by SIGKILL", false), old, t0, &s, 0.0),
            vec![]
        );
        assert_eq!(m.state, Starting);
    }

    #[test]
    fn stop_during_backoff_cancels_the_retry() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        let s = settings();
        m.next(Event::Start, 0, t0, &s, 0.0);
        m.failures = 3;
        let g = m.generation;
        let a = m.next(exit("exited with status 1", false), g, t0, &s, 0.0);
        assert!(matches!(a.as_slice(), [RetryAfter(_), Settled]));
        let g = m.generation;
        assert_eq!(m.next(Event::Stop, g, t0, &s, 0.0), vec![Settled]);
        assert_eq!(m.state, Stopped);
        assert_eq!(m.next(Event::RetryDue, g, t0, &s, 0.0), vec![]);
        assert_eq!(m.state, Stopped);
    }

    #[test]
    fn start_timeout_kills_and_counts_as_a_failure() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        run(
            &mut m,
            t0,
            &[
                (0, Event::Start, Starting, vec![Spawn]),
                (1, Event::Spawned { pid: 10 }, Starting, vec![]),
                (
                    60_000,
                    Event::StartTimedOut,
                    Starting,
                    vec![Signal(super::Signal::Kill)],
                ),
                (
                    60_001,
                    exit("killed by SIGKILL", false),
                    Starting,
                    vec![Spawn],
                ),
            ],
        );
        assert_eq!(
            m.last_exit.as_deref(),
            Some("did not answer PING within 60 s, killed")
        );
    }

    #[test]
    fn a_handover_starts_it_unless_that_would_wipe_replicas() {
        let s = settings();
        let t0 = Instant::now();
        let failed = |hold| Event::HandoverFailed {
            error: "127.0.1.2:7001 does not answer".into(),
            hold,
        };
        let mut m = Machine::default();
        assert_eq!(m.next(Event::Start, 0, t0, &s, 0.0), vec![Spawn]);
        let g = m.generation;
        assert_eq!(m.next(failed(false), g, t0, &s, 0.0), vec![Spawn]);
        assert_eq!(m.state, Starting);

        let mut m = Machine::default();
        m.next(Event::Start, 0, t0, &s, 0.0);
        let g = m.generation;
        assert_eq!(m.next(Event::HandedOver, g, t0, &s, 0.0), vec![Spawn]);
        assert_eq!(m.generation, g + 1);
    }

    #[test]
    fn a_dataless_master_is_held_and_retried_until_a_replica_takes_over() {
        let s = settings();
        let t0 = Instant::now();
        let failed = || Event::HandoverFailed {
            error: "127.0.1.2:7001 does not answer".into(),
            hold: true,
        };
        let mut m = Machine::default();
        m.next(Event::Start, 0, t0, &s, 0.0);
        // Each failed handover holds it and schedules the next try, later
        // each time up to 2 s; it never gives up and never starts empty.
        let mut delays = Vec::new();
        for _ in 0..7 {
            let g = m.generation;
            let actions = m.next(failed(), g, t0, &s, 0.0);
            assert_eq!(m.state, Held);
            assert_eq!(m.pid, None);
            let [RetryAfter(d), Settled] = actions[..] else {
                panic!("{actions:?}")
            };
            delays.push(d.as_millis());
            assert!(
                m.fatal_reason
                    .as_deref()
                    .unwrap()
                    .contains("does not answer")
            );
            assert_eq!(m.next(Event::RetryDue, g, t0, &s, 0.0), vec![Handover]);
            assert_eq!(m.state, Held, "held while the handover is tried again");
        }
        assert_eq!(delays, vec![250, 500, 1000, 2000, 2000, 2000, 2000]);
        // A replica answers and takes over: it starts, and the next hold
        // starts its back-off afresh.
        let g = m.generation;
        assert_eq!(m.next(Event::HandedOver, g, t0, &s, 0.0), vec![Spawn]);
        assert_eq!(m.hold_attempts, 0);
        assert_eq!(m.fatal_reason, None);

        // Stopped while held: the pending retry is stale.
        let mut m = Machine::default();
        m.next(Event::Start, 0, t0, &s, 0.0);
        let g = m.generation;
        m.next(failed(), g, t0, &s, 0.0);
        assert_eq!(m.next(Event::Stop, 0, t0, &s, 0.0), vec![Settled]);
        assert_eq!(m.state, Stopped);
        assert_eq!(m.next(Event::RetryDue, g, t0, &s, 0.0), vec![]);
        // Stopped while a handover try runs: its outcome is stale.
        let mut m = Machine::default();
        m.next(Event::Start, 0, t0, &s, 0.0);
        let g = m.generation;
        m.next(failed(), g, t0, &s, 0.0);
        m.next(Event::RetryDue, g, t0, &s, 0.0);
        let trying = m.generation;
        m.next(Event::Stop, 0, t0, &s, 0.0);
        assert_eq!(m.next(Event::HandedOver, trying, t0, &s, 0.0), vec![]);
        assert_eq!(m.state, Stopped);
        // An operator's start from HELD tries the handover again at once.
        let mut m = Machine::default();
        m.next(Event::Start, 0, t0, &s, 0.0);
        let g = m.generation;
        m.next(failed(), g, t0, &s, 0.0);
        assert_eq!(m.next(Event::Start, 0, t0, &s, 0.0), vec![Spawn]);
        assert_eq!(m.state, Starting);
        assert!(!State::Held.has_process());
    }

    #[test]
    fn spawn_failure_is_fatal_at_once() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        run(
            &mut m,
            t0,
            &[
                (0, Event::Start, Starting, vec![Spawn]),
                (
                    1,
                    Event::SpawnFailed {
                        error: "No such file or directory".into(),
                    },
                    Fatal,
                    vec![Settled],
                ),
            ],
        );
        assert_eq!(
            m.fatal_reason.as_deref(),
            Some("cannot start redis-server: No such file or directory")
        );
    }

    #[test]
    fn adopted_process_waits_for_ping_like_a_start() {
        let mut m = Machine::default();
        let t0 = Instant::now();
        run(
            &mut m,
            t0,
            &[
                (0, Event::Adopted { pid: 42 }, Starting, vec![]),
                (1, Event::Ready, Running, vec![Settled]),
            ],
        );
        assert_eq!(m.pid, Some(42));
    }

    #[test]
    fn backoff_is_immediate_then_doubles_to_a_cap_with_bounded_jitter() {
        let s = settings();
        assert_eq!(backoff_delay(1, 0.9, &s), Duration::ZERO);
        assert_eq!(backoff_delay(2, 0.0, &s), Duration::from_millis(50));
        assert_eq!(backoff_delay(2, 1.0, &s), Duration::from_millis(75));
        assert_eq!(backoff_delay(5, 0.0, &s), Duration::from_millis(400));
        assert_eq!(backoff_delay(30, 1.0, &s), s.backoff_max);
    }
}
