use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, FusedStream, Stream, StreamExt};

use super::event::Event;
use crate::error::Result;

/// The events of one ask (see [`Event`] for their order). Lazy: nothing happens until it is
/// polled. Dropping it before the answer is complete cancels the ask: the model call is
/// dropped and nothing is saved. Once the answer is complete, its turn is saved even if the
/// stream is dropped during the save ([`crate::Pipeline::flush`] waits for it).
#[must_use = "an AnswerStream does nothing unless polled"]
pub struct AnswerStream {
    inner: BoxStream<'static, Event>,
    done: bool,
    /// Set by the flow once the answer is complete and its save armed.
    complete: Arc<AtomicBool>,
    /// The ask's span, entered while the flow runs; closed at the terminal event.
    span: tracing::Span,
}

impl AnswerStream {
    pub(crate) fn new(
        inner: BoxStream<'static, Event>,
        complete: Arc<AtomicBool>,
        span: tracing::Span,
    ) -> Self {
        AnswerStream {
            inner,
            done: false,
            complete,
            span,
        }
    }

    /// Whether the ask is past the point where dropping the stream cancels it: the model's
    /// answer is complete and its turn is being saved (or the ask has ended). A caller that
    /// must stop early (a deadline, a client gone) can tell from this whether the turn will
    /// still be saved (or dead-lettered by the pipeline), so that it neither reports the
    /// answer as lost nor dead-letters it a second time.
    pub fn is_complete(&self) -> bool {
        self.done || self.complete.load(Ordering::Acquire)
    }

    /// Only the answer text: `Ok` tokens, then one `Err` if the ask failed.
    pub fn tokens(self) -> BoxStream<'static, Result<String>> {
        self.filter_map(|event| async move {
            match event {
                Event::Token(t) => Some(Ok(t)),
                Event::Error(failure) => Some(Err(failure.error)),
                _ => None,
            }
        })
        .boxed()
    }

    /// The whole answer, or the error that ended the ask.
    pub async fn text(self) -> Result<String> {
        let mut tokens = self.tokens();
        let mut answer = String::new();
        while let Some(token) = tokens.next().await {
            answer.push_str(&token?);
        }
        Ok(answer)
    }
}

impl std::fmt::Debug for AnswerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Stream for AnswerStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let item = this.span.in_scope(|| this.inner.poll_next_unpin(cx));
        match &item {
            // The stream ends after its terminal event, whatever the producer would do next.
            Poll::Ready(Some(event)) if event.is_terminal() => {
                super::trace::ask_event(&this.span, event);
                this.done = true;
                // The ask's span ends here (or when a save still running ends), not when the
                // caller drops the stream.
                this.span = tracing::Span::none();
            }
            Poll::Ready(None) => this.done = true,
            _ => {}
        }
        item
    }
}

impl FusedStream for AnswerStream {
    fn is_terminated(&self) -> bool {
        self.done
    }
}
