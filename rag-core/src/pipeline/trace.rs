//! The `tracing` spans of an ask: one for the ask, one per stage, with fields named after
//! OpenTelemetry's GenAI semantic conventions (`docs/gen-ai/gen-ai-spans.md` of
//! `open-telemetry/semantic-conventions-genai`, status Development). No exporter here: a
//! service adds one (see `docs/tracing.md`).
//!
//! The spans, all at `INFO` with target `rag_core::pipeline::trace`:
//!
//! | span | `otel.name` | fields |
//! |---|---|---|
//! | `rag.ask` | | `gen_ai.conversation.id`, `rag.turn.id`, `rag.saved`, `error.type`, `rag.error.stage` |
//! | `rag.history` | `search_memory` | `gen_ai.operation.name`, `gen_ai.memory.record.count` |
//! | `rag.retrieval` | `retrieval` | `gen_ai.operation.name`, `gen_ai.request.top_k`, `gen_ai.retrieval.documents` |
//! | `rag.prompt` | | `rag.prompt.tokens`, `rag.prompt.counted_tokens`, passages and turns kept and dropped |
//! | `rag.generation` | `{operation} {model}` | the inference span's request, response and usage fields |
//! | `rag.screen` | | `rag.screen.blocked` |
//! | `rag.rewrite` | | `rag.rewrite.query_chars` |
//! | `rag.save` | `create_memory` | `gen_ai.operation.name`, `gen_ai.memory.record.id`, `gen_ai.memory.record.count` |
//!
//! Failed stages and asks carry `error.type` (see [`error_type`]) and `otel.status_code`.
//! Nothing is recorded per token: usage and the finish reason are recorded once, when the
//! model's stream ends.

use std::future::Future;
use std::time::Duration;

use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::event::Event;
use super::Ask;
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::prompt::{Prompt, RenderedPrompt};
use crate::types::{GenerationParams, Retrieved, StopReason, Turn, TurnId, Usage};

/// The span of one ask, a child of the caller's current span. The [`super::AnswerStream`]
/// enters it whenever it is polled, so the stage spans made in the flow are its children.
pub(super) fn ask(ask: &Ask) -> Span {
    tracing::info_span!(
        "rag.ask",
        "gen_ai.conversation.id" = %ask.session,
        "rag.turn.id" = Empty,
        "rag.saved" = Empty,
        "error.type" = Empty,
        "rag.error.stage" = Empty,
        "otel.status_code" = Empty,
        "otel.status_description" = Empty,
    )
}

/// Records the ask's terminal event on its span; other events cost one match.
pub(super) fn ask_event(span: &Span, event: &Event) {
    match event {
        Event::Done(summary) => {
            span.record("rag.turn.id", tracing::field::display(summary.turn_id));
            span.record("rag.saved", summary.saved);
        }
        Event::Error(failure) => {
            failed(span, &failure.error);
            span.record("rag.error.stage", tracing::field::display(failure.stage));
        }
        _ => {}
    }
}

/// `error.type` and the span's status for an operation that ended in `error`.
pub(super) fn failed(span: &Span, error: &Error) {
    span.record("error.type", error_type(error));
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(error));
}

/// The `error.type` values this library reports (the conventions ask instrumentations to
/// document them): the [`Error`] variant in snake case. `timeout` is also the conventions'
/// example value.
pub(super) fn error_type(error: &Error) -> &'static str {
    match error {
        Error::InvalidInput { .. } => "invalid_input",
        Error::Config { .. } => "config",
        Error::Template { .. } => "template",
        Error::Retrieval { .. } => "retrieval",
        Error::History { .. } => "history",
        Error::Generation { .. } => "generation",
        Error::ContextOverflow { .. } => "context_overflow",
        Error::Timeout { .. } => "timeout",
        Error::PromptTooLong { .. } => "prompt_too_long",
        Error::Panicked { .. } => "panicked",
        Error::ShuttingDown => "shutting_down",
        Error::Forbidden { .. } => "forbidden",
    }
}

/// `fut` in `span`; its error, or what `ok` records of its value, on the span.
async fn traced<T>(
    span: Span,
    fut: impl Future<Output = Result<T>>,
    ok: impl FnOnce(&Span, &T),
) -> Result<T> {
    let out = fut.instrument(span.clone()).await;
    match &out {
        Ok(value) => ok(&span, value),
        Err(error) => failed(&span, error),
    }
    out
}

/// The question screen ([`crate::QuestionScreen`]): whether it blocked the question.
pub(super) fn screen(
    fut: impl Future<Output = Result<crate::Screening>>,
) -> impl Future<Output = Result<crate::Screening>> {
    let span = tracing::info_span!(
        "rag.screen",
        "rag.screen.blocked" = Empty,
        "error.type" = Empty,
        "otel.status_code" = Empty,
        "otel.status_description" = Empty,
    );
    traced(span, fut, |span, screening| {
        span.record(
            "rag.screen.blocked",
            matches!(screening, crate::Screening::Blocked(_)),
        );
    })
}

/// The follow-up rewrite ([`crate::QueryRewriter`]); the query's text is not recorded.
pub(super) fn rewrite(
    fut: impl Future<Output = Result<String>>,
) -> impl Future<Output = Result<String>> {
    let span = tracing::info_span!(
        "rag.rewrite",
        "rag.rewrite.query_chars" = Empty,
        "error.type" = Empty,
        "otel.status_code" = Empty,
        "otel.status_description" = Empty,
    );
    traced(span, fut, |span, query| {
        span.record("rag.rewrite.query_chars", query.chars().count());
    })
}

/// The history read (a memory search in the conventions' terms), when there is a store.
pub(super) fn history(
    has_store: bool,
    fut: impl Future<Output = Result<Vec<Turn>>>,
) -> impl Future<Output = Result<Vec<Turn>>> {
    let span = if has_store {
        tracing::info_span!(
            "rag.history",
            "otel.name" = "search_memory",
            "otel.kind" = "client",
            "gen_ai.operation.name" = "search_memory",
            "gen_ai.memory.record.count" = Empty,
            "error.type" = Empty,
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        )
    } else {
        Span::none()
    };
    traced(span, fut, |span, turns| {
        span.record("gen_ai.memory.record.count", turns.len());
    })
}

/// The retrieval, when there is a retriever. The documents are recorded as the conventions'
/// `gen_ai.retrieval.documents` JSON (`[{"id": .., "score": ..}]`, no text) in rank order.
pub(super) fn retrieval(
    has_retriever: bool,
    top_k: usize,
    fut: impl Future<Output = Result<Retrieved>>,
) -> impl Future<Output = Result<Retrieved>> {
    let span = if has_retriever {
        tracing::info_span!(
            "rag.retrieval",
            "otel.name" = "retrieval",
            "otel.kind" = "client",
            "gen_ai.operation.name" = "retrieval",
            // A double in the conventions.
            "gen_ai.request.top_k" = top_k as f64,
            "gen_ai.retrieval.documents" = Empty,
            "rag.retrieval.document_count" = Empty,
            "error.type" = Empty,
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        )
    } else {
        Span::none()
    };
    traced(span, fut, |span, retrieved| {
        span.record("rag.retrieval.document_count", retrieved.passages.len());
        // Built only when someone listens.
        if !span.is_disabled() {
            let documents: Vec<_> = retrieved
                .passages
                .iter()
                .map(|p| serde_json::json!({ "id": p.id, "score": p.score }))
                .collect();
            span.record(
                "gen_ai.retrieval.documents",
                tracing::field::display(serde_json::Value::Array(documents)),
            );
        }
    })
}

/// Rendering the prompt in budget (and the model's count of it, with a counter).
pub(super) fn prompt<W>(
    fut: impl Future<Output = Result<(RenderedPrompt, Option<usize>, W)>>,
) -> impl Future<Output = Result<(RenderedPrompt, Option<usize>, W)>> {
    let span = tracing::info_span!(
        "rag.prompt",
        "rag.prompt.tokens" = Empty,
        "rag.prompt.counted_tokens" = Empty,
        "rag.prompt.passages_kept" = Empty,
        "rag.prompt.passages_dropped" = Empty,
        "rag.prompt.turns_kept" = Empty,
        "rag.prompt.turns_dropped" = Empty,
        "error.type" = Empty,
        "otel.status_code" = Empty,
        "otel.status_description" = Empty,
    );
    traced(span, fut, |span, (rendered, counted, _)| {
        span.record("rag.prompt.tokens", rendered.token_count);
        if let Some(counted) = counted {
            span.record("rag.prompt.counted_tokens", counted);
        }
        span.record("rag.prompt.passages_kept", rendered.passages_kept.len());
        span.record(
            "rag.prompt.passages_dropped",
            rendered.passages_dropped.len(),
        );
        span.record("rag.prompt.turns_kept", rendered.turns_kept);
        span.record("rag.prompt.turns_dropped", rendered.turns_dropped);
    })
}

/// The model call, its retries and its whole stream: the conventions' inference span.
/// `gen_ai.operation.name` is `chat` for a chat prompt and `text_completion` for a raw text
/// one; the OpenTelemetry span name is `{gen_ai.operation.name} {gen_ai.request.model}`. The
/// request's model, provider and settings are there from the start (the conventions want them
/// at creation, for sampling); the rest is recorded by [`first_chunk`] and [`finished`].
pub(super) fn generation(
    generator: &dyn Generator,
    prompt: &Prompt,
    params: &GenerationParams,
) -> Span {
    let operation = match prompt {
        Prompt::Chat { .. } => "chat",
        Prompt::Text(_) => "text_completion",
    };
    let model = generator.model_id();
    let span = tracing::info_span!(
        "rag.generation",
        "otel.name" = Empty,
        "otel.kind" = "client",
        "gen_ai.operation.name" = operation,
        "gen_ai.provider.name" = generator.provider(),
        "gen_ai.request.model" = model,
        "gen_ai.request.max_tokens" = params.max_tokens,
        "gen_ai.request.temperature" = params.temperature.map(f64::from),
        "gen_ai.request.top_p" = params.top_p.map(f64::from),
        "gen_ai.request.top_k" = params.top_k.map(f64::from),
        "gen_ai.request.stream" = true,
        "gen_ai.response.time_to_first_chunk" = Empty,
        "gen_ai.response.finish_reasons" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "gen_ai.usage.cache_read.input_tokens" = Empty,
        "gen_ai.usage.cache_creation.input_tokens" = Empty,
        "rag.generation.attempts" = Empty,
        "error.type" = Empty,
        "otel.status_code" = Empty,
        "otel.status_description" = Empty,
    );
    if !span.is_disabled() {
        match model {
            Some(model) => span.record("otel.name", format!("{operation} {model}")),
            None => span.record("otel.name", operation),
        };
    }
    span
}

/// The model's first text arrived `after` the first call was made, on attempt `attempts`.
pub(super) fn first_chunk(span: &Span, after: Duration, attempts: u32) {
    span.record("gen_ai.response.time_to_first_chunk", after.as_secs_f64());
    span.record("rag.generation.attempts", attempts);
}

/// The model's stream ended: its usage and finish reason, once; the span closes.
///
/// `gen_ai.usage.input_tokens` includes the cached tokens, as the conventions say it should
/// ([`Usage::prompt_tokens`]; `Usage::input_tokens` is the uncached part); the cache reads and writes
/// are `gen_ai.usage.cache_read.input_tokens` and `gen_ai.usage.cache_creation.input_tokens`.
pub(super) fn finished(span: Span, usage: Option<&Usage>, stop: Option<&StopReason>) {
    if let Some(usage) = usage {
        span.record("gen_ai.usage.input_tokens", usage.prompt_tokens());
        span.record("gen_ai.usage.output_tokens", usage.output_tokens);
        span.record(
            "gen_ai.usage.cache_read.input_tokens",
            usage.cache_read_input_tokens,
        );
        span.record(
            "gen_ai.usage.cache_creation.input_tokens",
            usage.cache_write_input_tokens,
        );
    }
    if let Some(stop) = stop {
        // A string array in the conventions; one generation, so one reason.
        let reasons = serde_json::json!([finish_reason(stop)]);
        span.record(
            "gen_ai.response.finish_reasons",
            tracing::field::display(reasons),
        );
    }
}

/// The finish reason as the conventions' examples spell them: snake case, the model's own
/// word for a reason this library does not know.
fn finish_reason(stop: &StopReason) -> &str {
    match stop {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence(_) => "stop_sequence",
        StopReason::ContentFiltered => "content_filtered",
        StopReason::GuardrailIntervened(_) => "guardrail_intervened",
        StopReason::Other(reason) => reason,
    }
}

/// Saving the turn (a memory record created, in the conventions' terms). Made while the ask's
/// span is entered, so it stays the ask's child when the save finishes in a background task.
pub(super) fn save(
    turn_id: TurnId,
    fut: impl Future<Output = Result<()>> + Send + 'static,
) -> impl Future<Output = Result<()>> + Send + 'static {
    let span = tracing::info_span!(
        "rag.save",
        "otel.name" = "create_memory",
        "otel.kind" = "client",
        "gen_ai.operation.name" = "create_memory",
        "gen_ai.memory.record.id" = %turn_id,
        "gen_ai.memory.record.count" = 1u64,
        "error.type" = Empty,
        "otel.status_code" = Empty,
        "otel.status_description" = Empty,
    );
    traced(span, fut, |_, ()| {})
}
