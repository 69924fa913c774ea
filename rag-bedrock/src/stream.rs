//! Drives an SDK event stream into a [`ChunkStream`], with an idle timeout the SDK lacks.

use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use rag_core::{Chunk, ChunkStream, Error, Result, Stage};

use crate::error::{from_sdk_error, Backend, ServiceCode};

/// Turns one API's events into chunks.
pub(crate) trait EventDecoder<T>: Send + 'static {
    /// The chunks one event holds.
    fn decode(&mut self, event: T) -> Result<Vec<Chunk>>;
    /// Whether the model's stop reason has been seen.
    fn stopped(&self) -> bool;
    /// Chunks still held when the stream ends (usage reported after the stop reason).
    fn finish(&mut self) -> Vec<Chunk>;
}

/// The answer stream of `receiver`: every event decoded, the first error ends it.
///
/// Each wait for the next event is bounded by `idle`: the SDK's timeouts cover connecting and
/// the initial response but not a stream that goes silent, which ends here with
/// [`Error::Timeout`]. A stream that ends before the model's stop reason was cut off and ends
/// with a retryable [`Error::Generation`].
pub(crate) fn drive<T, E, D>(
    mut receiver: EventReceiver<T, E>,
    mut decoder: D,
    idle: Duration,
    operation: &'static str,
) -> ChunkStream
where
    T: Send + 'static,
    E: ServiceCode + StdError + Send + Sync + 'static,
    D: EventDecoder<T>,
{
    Box::pin(async_stream::stream! {
        loop {
            let event = match tokio::time::timeout(idle, receiver.recv()).await {
                Err(_) => {
                    tracing::warn!(operation, ?idle, "Bedrock stream went silent");
                    yield Err(Error::Timeout { stage: Stage::Generation, after: idle });
                    return;
                }
                Ok(Err(err)) => {
                    yield Err(from_sdk_error(Backend::Generation, operation, err));
                    return;
                }
                Ok(Ok(None)) => {
                    for chunk in decoder.finish() {
                        yield Ok(chunk);
                    }
                    if !decoder.stopped() {
                        yield Err(Error::generation(
                            format!("{operation}: the stream ended before the model's stop reason"),
                            true,
                        ));
                    }
                    return;
                }
                Ok(Ok(Some(event))) => event,
            };
            match decoder.decode(event) {
                Ok(chunks) => {
                    for chunk in chunks {
                        yield Ok(chunk);
                    }
                }
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        }
    })
}
