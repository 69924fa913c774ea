//! Work that must finish even if the caller stops listening.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::TaskTracker;

/// Runs `fut` where it is awaited; if it is dropped before finishing (the caller dropped the
/// answer stream mid-save), the rest of it moves into a tracked task and still completes. The
/// common path, awaited to the end, costs no spawn and no cross-thread wake-up.
pub(super) struct FinishOnDrop<F: Future + Send + 'static> {
    fut: Option<Pin<Box<F>>>,
    tasks: TaskTracker,
}

impl<F: Future + Send + 'static> FinishOnDrop<F> {
    pub(super) fn new(fut: F, tasks: TaskTracker) -> Self {
        FinishOnDrop {
            fut: Some(Box::pin(fut)),
            tasks,
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            panic!("FinishOnDrop polled after it completed");
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.tasks.spawn_on(
                    async move {
                        fut.await;
                    },
                    &handle,
                );
            }
            // Only reachable if the stream is dropped outside any Tokio runtime.
            Err(_) => {
                tracing::error!("an unfinished turn save was dropped outside a Tokio runtime")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn finishes_in_place_when_awaited() {
        let tasks = TaskTracker::new();
        assert_eq!(FinishOnDrop::new(async { 7 }, tasks.clone()).await, 7);
        assert!(tasks.is_empty(), "no task was spawned");
    }

    #[tokio::test]
    async fn finishes_in_a_task_when_dropped_midway() {
        let tasks = TaskTracker::new();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let mut work = FinishOnDrop::new(
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                flag.store(true, Ordering::SeqCst);
            },
            tasks.clone(),
        );
        // Poll once so it is midway, then drop it.
        assert!(futures::poll!(&mut work).is_pending());
        drop(work);
        assert_eq!(tasks.len(), 1);
        tasks.close();
        tasks.wait().await;
        assert!(
            finished.load(Ordering::SeqCst),
            "the dropped work still completed"
        );
    }
}
