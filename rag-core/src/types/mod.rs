//! The values that flow through a pipeline.

mod generation;
mod image;
mod passage;
mod session;
mod turn;

pub use generation::{Chunk, GenerationParams, GuardrailIntervention, StopReason, Usage};
pub use image::{Image, ImageFormat};
pub use passage::{Citation, Filter, Passage, RetrievalRequest, Retrieved, UserContext};
pub use session::{Owner, SessionId, SessionOwner};
pub use turn::{Turn, TurnId};
