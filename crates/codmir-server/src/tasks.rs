//! One owner for the background tasks of a running server (mini-redis's habit): every task is
//! spawned through a [`Tasks`], which holds a task tracker and one cancellation token, so
//! that shutdown can tell every task to stop and then wait until each has ended. Nothing is
//! detached.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// A tracker of tasks and the signal that tells them to stop. Clones share both.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `task` on the runtime, tracked.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Runs blocking `work` on the runtime's blocking threads, tracked.
    pub fn spawn_blocking<F, T>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tracker.spawn_blocking(work)
    }

    /// Resolves once stopping was asked for.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Tells every task to stop.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits, at most `grace`, until every task spawned through these has ended; false when
    /// some still run (they are named in the log by the caller's context, and left to end
    /// with the runtime).
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_reaches_every_task_and_wait_returns_once_all_have_ended() {
        let tasks = Tasks::default();
        for _ in 0..3 {
            let t = tasks.clone();
            tasks.spawn(async move { t.stopping().await });
        }
        assert_eq!(tasks.running(), 3);
        assert!(
            !tasks.wait(Duration::from_millis(50)).await,
            "they wait for the stop"
        );
        tasks.stop();
        assert!(tasks.wait(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);
    }
}
