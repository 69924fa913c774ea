//! InvokeModelWithResponseStream: each family's native request body and stream chunks.

mod request;
mod response;

pub(crate) use request::{
    chat_prompt, check_images, has_native_format, request_body, request_body_cached,
    CONVERSE_IMAGE_LIMITS, F32,
};
pub(crate) use response::{claude_stop_reason, ChunkParser};
