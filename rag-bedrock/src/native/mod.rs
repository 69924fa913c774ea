//! InvokeModelWithResponseStream: each family's native request body and stream chunks.

mod request;
mod response;

pub(crate) use request::{chat_prompt, has_native_format, request_body};
pub(crate) use response::{claude_stop_reason, ChunkParser};
