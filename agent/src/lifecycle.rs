//! The agent's lifecycle: one cancellation token and one task tracker that
//! every task the service and the supervisor start is spawned on, and the
//! order in which shutdown ends them.
//!
//! Shutdown steps, each logged, each a child token of the one root token
//! (cancelling the root ends everything left):
//!
//! 1. stop accepting connections (the accept loop and its handshakes);
//! 2. end the open `events` and `logs -f` streams, so tonic's graceful
//!    shutdown does not wait for a watching client; tonic then finishes
//!    the RPCs under way;
//! 3. stop supervision: the supervisor's loop, its timers (back-off,
//!    stop timeouts, HELD retries), process waits, readiness probes,
//!    handovers and group watches, log rotation and the systemd watchdog.
//!    Redis processes are left running (the next agent re-adopts them);
//! 4. wait for the tracked tasks, at most [`FINISH_WITHIN`].

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long shutdown waits for the tracked tasks once they were told to end.
pub const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// Handed to everything that starts tasks. Clones share the tokens and
/// the tracker.
#[derive(Clone)]
pub struct Lifecycle {
    root: CancellationToken,
    accepting: CancellationToken,
    streams: CancellationToken,
    supervision: CancellationToken,
    tasks: TaskTracker,
}

/// Which shutdown step ends a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Accepting,
    Streams,
    Supervision,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// The steps' tokens are children of one root token.
    pub fn new() -> Self {
        let root = CancellationToken::new();
        Lifecycle {
            accepting: root.child_token(),
            streams: root.child_token(),
            supervision: root.child_token(),
            root,
            tasks: TaskTracker::new(),
        }
    }

    /// The token that shutdown step `step` cancels.
    pub fn token(&self, step: Step) -> &CancellationToken {
        match step {
            Step::Accepting => &self.accepting,
            Step::Streams => &self.streams,
            Step::Supervision => &self.supervision,
        }
    }

    /// Spawns `task` on the tracker; it is dropped (ends at its next await)
    /// when `step` begins.
    pub fn spawn<F>(&self, step: Step, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token(step).clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Spawns `task` on the tracker; it watches its own token (see
    /// [`Lifecycle::token`]) to end at its step.
    pub fn track<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Steps 1 and 2: no new connections, open streams end.
    pub fn stop_serving(&self) {
        info!("shutdown 1/4: no longer accepting connections");
        self.accepting.cancel();
        info!("shutdown 2/4: ending open event and log streams; finishing RPCs under way");
        self.streams.cancel();
    }

    /// Steps 3 and 4, once the server has stopped: supervision ends, then
    /// the tracked tasks are waited for, at most `within`. False: some did
    /// not end in time (they are dropped with the runtime).
    pub async fn finish(&self, within: Duration) -> bool {
        info!(
            "shutdown 3/4: stopping supervision (timers, process waits, probes, handovers, group watches, log rotation); Redis instances keep running"
        );
        self.supervision.cancel();
        self.root.cancel();
        self.tasks.close();
        info!(
            tasks = self.tasks.len(),
            "shutdown 4/4: waiting for the agent's tasks to end (up to {} s)",
            within.as_secs()
        );
        let ended = tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok();
        if !ended {
            warn!(
                tasks = self.tasks.len(),
                "tasks still running after {} s; leaving them",
                within.as_secs()
            );
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The order: serving stops (accepting and streams) while supervision
    /// goes on; supervision ends only at `finish`, which waits for every task.
    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_tasks_step_by_step_and_waits_for_them() {
        let life = Lifecycle::new();
        let ended = Arc::new(AtomicU32::new(0));
        for step in [Step::Accepting, Step::Streams, Step::Supervision] {
            let ended = ended.clone();
            let bit = 1 << step as u32;
            life.spawn(step, async move {
                struct OnDrop(Arc<AtomicU32>, u32);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.fetch_or(self.1, Ordering::SeqCst);
                    }
                }
                let _mark = OnDrop(ended, bit);
                std::future::pending::<()>().await;
            });
        }
        tokio::task::yield_now().await;
        assert_eq!(ended.load(Ordering::SeqCst), 0);
        life.stop_serving();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            ended.load(Ordering::SeqCst),
            0b011,
            "accepting and streams ended, supervision goes on"
        );
        assert!(life.finish(FINISH_WITHIN).await);
        assert_eq!(ended.load(Ordering::SeqCst), 0b111);
        assert!(life.tasks.is_empty());
    }

    /// A task that ignores cancellation (blocked in a future that never
    /// looks at the token) does not hold shutdown longer than the bound.
    #[tokio::test(start_paused = true)]
    async fn finish_waits_at_most_the_bound() {
        let life = Lifecycle::new();
        life.tasks.spawn(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        assert!(!life.finish(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
