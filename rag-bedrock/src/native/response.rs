//! Parsing each family's stream chunks into text, usage and a normalized stop reason.

use rag_core::{Chunk, Error, GuardrailIntervention, ModelFamily, Result, StopReason, Usage};
use serde::Deserialize;
use serde_json::Value;

use crate::guardrail::{Guardrail, GuardrailStreamProcessing, NATIVE_ACTION_KEY, NATIVE_TRACE_KEY};

/// What Bedrock adds to the last chunk of every family.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: Option<u64>,
    output_token_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Metrics {
    #[serde(rename = "amazon-bedrock-invocationMetrics")]
    metrics: Option<InvocationMetrics>,
}

#[derive(Debug, Deserialize)]
struct ClaudeEvent {
    #[serde(rename = "type")]
    kind: String,
    message: Option<ClaudeMessage>,
    delta: Option<ClaudeDelta>,
    usage: Option<ClaudeUsage>,
}

#[derive(Debug, Deserialize)]
struct ClaudeMessage {
    usage: Option<ClaudeUsage>,
}

#[derive(Debug, Deserialize)]
struct ClaudeDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
}

/// Claude's usage. With prompt caching, `input_tokens` counts only the prompt's tokens after
/// the last cache point, and the cached ones are in `cache_read_input_tokens` and
/// `cache_creation_input_tokens` (Anthropic's prompt caching guide, "Tracking cache
/// performance": total input = the three together), as [`Usage`] counts them.
#[derive(Debug, Deserialize)]
struct ClaudeUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ClaudeTextChunk {
    completion: Option<String>,
    stop_reason: Option<String>,
    stop: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LlamaChunk {
    generation: Option<String>,
    prompt_token_count: Option<u64>,
    generation_token_count: Option<u64>,
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanChunk {
    output_text: Option<String>,
    total_output_text_token_count: Option<u64>,
    input_text_token_count: Option<u64>,
    completion_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MistralChunk {
    #[serde(default)]
    outputs: Vec<MistralOutput>,
}

#[derive(Debug, Deserialize)]
struct MistralOutput {
    text: Option<String>,
    stop_reason: Option<String>,
}

/// The Claude legacy text API ends a normal answer at this stop sequence.
const CLAUDE_TURN_END: &str = "\n\nHuman:";

/// Reads one family's chunks in order and keeps the usage seen so far.
#[derive(Debug)]
pub(crate) struct ChunkParser {
    family: ModelFamily,
    usage: Usage,
    usage_reported: Usage,
    stopped: bool,
    guard: GuardState,
}

/// What a guardrail on the call did, as the chunks tell it.
///
/// Bedrock marks the chunks of an intervened answer with
/// `"amazon-bedrock-guardrailAction": "INTERVENED"` and, when the trace was asked for, sends
/// `"amazon-bedrock-trace": {"guardrail": {...}}`, whatever the family. The trace may come
/// after the family's stop reason, so with a guardrail the stop is held back until the chunk
/// that carries the invocation metrics (the last one) or the end of the stream.
#[derive(Debug, Default)]
struct GuardState {
    /// A guardrail was set on the call: `(keep the trace, synchronous processing)`.
    config: Option<(bool, bool)>,
    intervened: bool,
    /// The text of the chunks marked as intervened: the guardrail's own message.
    intervened_text: String,
    /// Every piece of text, for synchronous mode, where an intervened answer is the
    /// guardrail's alone.
    text: String,
    trace: Option<Value>,
    pending: Option<StopReason>,
}

impl ChunkParser {
    pub(crate) fn new(family: ModelFamily) -> Self {
        ChunkParser {
            family,
            usage: Usage::default(),
            usage_reported: Usage::default(),
            stopped: false,
            guard: GuardState::default(),
        }
    }

    /// Reads the chunks of a call made with `guardrail`.
    pub(crate) fn with_guardrail(mut self, guardrail: &Guardrail) -> Self {
        self.guard.config = Some((
            guardrail.traced(),
            guardrail.stream_processing() == GuardrailStreamProcessing::Sync,
        ));
        self
    }

    /// Whether a stop reason (or a guardrail's intervention, which ends the answer) was seen.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped || self.guard.intervened
    }

    /// What is still held when the stream ends: usage not yet reported, and a stop reason
    /// held back for the guardrail's trace.
    pub(crate) fn finish(&mut self) -> Vec<Chunk> {
        let mut out: Vec<Chunk> = self.take_usage().into_iter().collect();
        let stop = self.guard.pending.take().or_else(|| {
            // An intervention whose family stop reason never came still ends the answer.
            (self.guard.intervened && !self.stopped).then_some(StopReason::EndTurn)
        });
        if let Some(stop) = stop {
            self.stopped = true;
            out.push(Chunk::Stop(self.resolve(stop)));
        }
        out
    }

    /// The stop reason to report: a guardrail's intervention wins over the family's reason.
    fn resolve(&mut self, stop: StopReason) -> StopReason {
        let guard = &mut self.guard;
        if !guard.intervened && !matches!(stop, StopReason::GuardrailIntervened(_)) {
            return stop;
        }
        let sync = guard.config.is_some_and(|(_, sync)| sync);
        let message = if !guard.intervened_text.is_empty() {
            Some(std::mem::take(&mut guard.intervened_text))
        } else if sync && !guard.text.is_empty() {
            Some(std::mem::take(&mut guard.text))
        } else {
            None
        };
        StopReason::GuardrailIntervened(Box::new(GuardrailIntervention {
            message,
            trace: guard.trace.take(),
        }))
    }

    /// Notes what the chunk says of the guardrail.
    fn observe_guardrail(&mut self, value: &Value, out: &[Chunk]) {
        let intervened = value.get(NATIVE_ACTION_KEY).and_then(Value::as_str) == Some("INTERVENED");
        let guard = &mut self.guard;
        guard.intervened |= intervened;
        for chunk in out {
            if let Chunk::Text(text) = chunk {
                if intervened {
                    guard.intervened_text.push_str(text);
                }
                if guard.config.is_some() {
                    guard.text.push_str(text);
                }
            }
        }
        let keep_trace = guard.config.is_some_and(|(trace, _)| trace);
        if let Some(trace) = value.get(NATIVE_TRACE_KEY).and_then(|t| t.get("guardrail")) {
            if keep_trace {
                guard.trace = Some(trace.clone());
            }
        }
    }

    /// The chunks one payload of the stream holds. Unknown keys and event types are ignored;
    /// a payload that is not the family's JSON is a non-retryable [`Error::Generation`].
    pub(crate) fn parse(&mut self, payload: &[u8]) -> Result<Vec<Chunk>> {
        let value: Value = serde_json::from_slice(payload).map_err(|e| self.malformed(e))?;
        if !value.is_object() {
            return Err(self.malformed("the chunk is not a JSON object"));
        }
        let mut out = Vec::new();
        let mut stop = None;
        match self.family {
            ModelFamily::Claude => {
                let event: ClaudeEvent = self.decode(&value)?;
                match event.kind.as_str() {
                    "message_start" => {
                        if let Some(usage) = event.message.and_then(|m| m.usage) {
                            self.count(usage.input_tokens, usage.output_tokens);
                            self.count_cache(
                                usage.cache_read_input_tokens,
                                usage.cache_creation_input_tokens,
                            );
                        }
                    }
                    "content_block_delta" => {
                        if let Some(delta) = event.delta {
                            if delta.kind.as_deref().is_none_or(|k| k == "text_delta") {
                                push_text(&mut out, delta.text);
                            }
                        }
                    }
                    "message_delta" => {
                        if let Some(usage) = event.usage {
                            self.count(usage.input_tokens, usage.output_tokens);
                        }
                        if let Some(delta) = event.delta {
                            stop = delta
                                .stop_reason
                                .map(|r| claude_stop_reason(&r, delta.stop_sequence));
                        }
                    }
                    // content_block_start/stop, message_stop, ping and future events carry no
                    // text; their invocation metrics are read below.
                    _ => {}
                }
            }
            ModelFamily::ClaudeText => {
                let chunk: ClaudeTextChunk = self.decode(&value)?;
                push_text(&mut out, chunk.completion);
                stop = chunk.stop_reason.map(|r| match r.as_str() {
                    "stop_sequence"
                        if chunk.stop.as_deref().is_none_or(|s| s == CLAUDE_TURN_END) =>
                    {
                        StopReason::EndTurn
                    }
                    "stop_sequence" => StopReason::StopSequence(chunk.stop),
                    "max_tokens" => StopReason::MaxTokens,
                    _ => StopReason::Other(r),
                });
            }
            ModelFamily::Llama2 | ModelFamily::Llama3 => {
                let chunk: LlamaChunk = self.decode(&value)?;
                push_text(&mut out, chunk.generation);
                self.count(chunk.prompt_token_count, chunk.generation_token_count);
                stop = chunk.stop_reason.map(|r| match r.as_str() {
                    "stop" => StopReason::EndTurn,
                    "length" => StopReason::MaxTokens,
                    _ => StopReason::Other(r),
                });
            }
            ModelFamily::TitanText => {
                let chunk: TitanChunk = self.decode(&value)?;
                push_text(&mut out, chunk.output_text);
                self.count(
                    chunk.input_text_token_count,
                    chunk.total_output_text_token_count,
                );
                stop = chunk.completion_reason.map(|r| match r.as_str() {
                    "FINISH" => StopReason::EndTurn,
                    "LENGTH" => StopReason::MaxTokens,
                    "STOP_CRITERIA_MET" => StopReason::StopSequence(None),
                    "CONTENT_FILTERED" => StopReason::ContentFiltered,
                    _ => StopReason::Other(r),
                });
            }
            ModelFamily::Mistral => {
                let chunk: MistralChunk = self.decode(&value)?;
                for output in chunk.outputs {
                    push_text(&mut out, output.text);
                    if let Some(r) = output.stop_reason {
                        stop = Some(match r.as_str() {
                            "stop" => StopReason::EndTurn,
                            "length" | "model_length" => StopReason::MaxTokens,
                            _ => StopReason::Other(r),
                        });
                    }
                }
            }
            other => {
                return Err(Error::config(format!(
                    "model family {other} has no native stream parser here"
                )))
            }
        }
        let metrics: Metrics = self.decode(&value)?;
        let has_metrics = metrics.metrics.is_some();
        if let Some(m) = metrics.metrics {
            self.count(m.input_token_count, m.output_token_count);
        }
        self.observe_guardrail(&value, &out);
        let claude_usage_event = self.family == ModelFamily::Claude
            && matches!(
                value.get("type").and_then(Value::as_str),
                Some("message_start" | "message_delta")
            );
        if stop.is_some() || has_metrics || claude_usage_event {
            out.extend(self.take_usage());
        }
        if let Some(stop) = stop {
            self.stopped = true;
            if self.guard.config.is_some() {
                // Held back: the guardrail's trace may come in a later chunk.
                self.guard.pending = Some(stop);
            } else {
                let stop = self.resolve(stop);
                out.push(Chunk::Stop(stop));
            }
        }
        if has_metrics {
            if let Some(stop) = self.guard.pending.take() {
                let stop = self.resolve(stop);
                out.push(Chunk::Stop(stop));
            }
        }
        Ok(out)
    }

    /// Usage counted but not yet reported, for the end of the stream.
    pub(crate) fn take_usage(&mut self) -> Option<Chunk> {
        if self.usage == self.usage_reported || self.usage == Usage::default() {
            return None;
        }
        self.usage_reported = self.usage;
        Some(Chunk::Usage(self.usage))
    }

    /// Records the prompt-cache counts (read, written), where the family reports them.
    fn count_cache(&mut self, read: Option<u64>, write: Option<u64>) {
        if let Some(n) = read.filter(|&n| n > 0) {
            self.usage.cache_read_input_tokens = n;
        }
        if let Some(n) = write.filter(|&n| n > 0) {
            self.usage.cache_write_input_tokens = n;
        }
    }

    /// Records token counts; running totals only grow, and an absent count keeps the last one.
    fn count(&mut self, input: Option<u64>, output: Option<u64>) {
        if let Some(n) = input.filter(|&n| n > 0) {
            self.usage.input_tokens = n;
        }
        if let Some(n) = output.filter(|&n| n > 0) {
            self.usage.output_tokens = self.usage.output_tokens.max(n);
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, value: &Value) -> Result<T> {
        T::deserialize(value).map_err(|e| self.malformed(e))
    }

    fn malformed(&self, err: impl std::fmt::Display) -> Error {
        Error::generation(
            format!(
                "Bedrock sent a stream chunk that is not {} model JSON: {err}",
                self.family
            ),
            false,
        )
    }
}

fn push_text(out: &mut Vec<Chunk>, text: Option<String>) {
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        out.push(Chunk::Text(text));
    }
}

/// Claude's stop reasons (Messages API and Converse use the same names).
pub(crate) fn claude_stop_reason(reason: &str, sequence: Option<String>) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence(sequence),
        "content_filtered" | "refusal" => StopReason::ContentFiltered,
        // The message and trace are filled in by the decoder that knows the guardrail.
        "guardrail_intervened" => StopReason::GuardrailIntervened(Box::default()),
        other => StopReason::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(family: ModelFamily, chunks: &[&str]) -> Vec<Chunk> {
        let mut parser = ChunkParser::new(family);
        let mut out: Vec<Chunk> = chunks
            .iter()
            .flat_map(|c| parser.parse(c.as_bytes()).unwrap())
            .collect();
        out.extend(parser.take_usage());
        assert!(parser.stopped());
        out
    }

    #[test]
    fn claude_messages_events_give_text_usage_and_stop() {
        let out = parse_all(
            ModelFamily::Claude,
            &[
                r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":12,"output_tokens":1}}}"#,
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
                r#"{"type":"ping"}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"output_tokens":7}}"#,
                r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":7,"invocationLatency":500,"firstByteLatency":90}}"#,
            ],
        );
        assert_eq!(
            out,
            vec![
                Chunk::Usage(Usage::new(12, 1)),
                Chunk::Text("Hel".into()),
                Chunk::Text("lo".into()),
                Chunk::Usage(Usage::new(12, 7)),
                Chunk::Stop(StopReason::StopSequence(Some("END".into()))),
            ]
        );
    }

    #[test]
    fn stop_reasons_are_normalized_per_family() {
        let cases: [(ModelFamily, &str, StopReason); 7] = [
            (
                ModelFamily::ClaudeText,
                r#"{"completion":"","stop_reason":"stop_sequence","stop":"\n\nHuman:"}"#,
                StopReason::EndTurn,
            ),
            (
                ModelFamily::ClaudeText,
                r#"{"completion":"","stop_reason":"max_tokens","stop":null}"#,
                StopReason::MaxTokens,
            ),
            (
                ModelFamily::Llama3,
                r#"{"generation":"","stop_reason":"length"}"#,
                StopReason::MaxTokens,
            ),
            (
                ModelFamily::TitanText,
                r#"{"outputText":"","index":0,"completionReason":"CONTENT_FILTERED"}"#,
                StopReason::ContentFiltered,
            ),
            (
                ModelFamily::TitanText,
                r#"{"outputText":"","completionReason":"FINISH"}"#,
                StopReason::EndTurn,
            ),
            (
                ModelFamily::Mistral,
                r#"{"outputs":[{"text":"","stop_reason":"stop"}]}"#,
                StopReason::EndTurn,
            ),
            (
                ModelFamily::Mistral,
                r#"{"outputs":[{"text":"","stop_reason":"something_new"}]}"#,
                StopReason::Other("something_new".into()),
            ),
        ];
        for (family, chunk, expected) in cases {
            let out = ChunkParser::new(family).parse(chunk.as_bytes()).unwrap();
            assert_eq!(
                out.last(),
                Some(&Chunk::Stop(expected)),
                "{family}: {chunk}"
            );
        }
    }

    #[test]
    fn a_guardrail_intervention_replaces_the_family_stop_reason() {
        // No guardrail set on the parser: the marked chunk still decides the outcome, at once.
        let mut parser = ChunkParser::new(ModelFamily::Llama3);
        let out = parser
            .parse(br#"{"generation":"Blocked.","stop_reason":"stop","amazon-bedrock-guardrailAction":"INTERVENED"}"#)
            .unwrap();
        assert_eq!(
            out.last(),
            Some(&Chunk::Stop(StopReason::GuardrailIntervened(Box::new(
                GuardrailIntervention {
                    message: Some("Blocked.".into()),
                    trace: None,
                }
            ))))
        );
        // With a guardrail, the stop waits for the last chunk and its trace.
        let guardrail = Guardrail::new("g1", "1").with_trace(crate::GuardrailTrace::Enabled);
        let mut parser = ChunkParser::new(ModelFamily::TitanText).with_guardrail(&guardrail);
        let first = parser
            .parse(br#"{"outputText":"No.","completionReason":"CONTENT_FILTERED","amazon-bedrock-guardrailAction":"INTERVENED"}"#)
            .unwrap();
        assert_eq!(first, vec![Chunk::Text("No.".into())]);
        assert!(parser.stopped());
        let last = parser
            .parse(br#"{"amazon-bedrock-trace":{"guardrail":{"k":1}},"amazon-bedrock-invocationMetrics":{"inputTokenCount":3,"outputTokenCount":1}}"#)
            .unwrap();
        assert_eq!(
            last,
            vec![
                Chunk::Usage(Usage::new(3, 1)),
                Chunk::Stop(StopReason::GuardrailIntervened(Box::new(
                    GuardrailIntervention {
                        message: Some("No.".into()),
                        trace: Some(serde_json::json!({"k": 1})),
                    }
                ))),
            ]
        );
        assert!(parser.finish().is_empty());
        // A guardrail that let the answer through leaves the family's reason, held to the end.
        let mut parser = ChunkParser::new(ModelFamily::Mistral).with_guardrail(&guardrail);
        let out = parser
            .parse(br#"{"outputs":[{"text":"Hi","stop_reason":"stop"}]}"#)
            .unwrap();
        assert_eq!(out, vec![Chunk::Text("Hi".into())]);
        assert_eq!(parser.finish(), vec![Chunk::Stop(StopReason::EndTurn)]);
    }

    #[test]
    fn malformed_chunks_are_non_retryable_errors() {
        let cases = [
            (ModelFamily::Llama3, "not json"),
            (ModelFamily::Llama3, "[1,2]"),
            (ModelFamily::Llama3, r#"{"generation":5}"#),
            (ModelFamily::Claude, r#"{"delta":{}}"#),
        ];
        for (family, chunk) in cases {
            let err = ChunkParser::new(family)
                .parse(chunk.as_bytes())
                .unwrap_err();
            assert!(!err.is_retryable(), "{chunk}");
            assert!(err.to_string().contains(family.name()), "{err}");
        }
    }

    #[test]
    fn llama_usage_is_reported_once_at_the_end() {
        let out = parse_all(
            ModelFamily::Llama2,
            &[
                r#"{"generation":"A","prompt_token_count":9,"generation_token_count":1,"stop_reason":null}"#,
                r#"{"generation":"B","prompt_token_count":null,"generation_token_count":2,"stop_reason":null,"extra":true}"#,
                r#"{"generation":"","prompt_token_count":null,"generation_token_count":3,"stop_reason":"stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":9,"outputTokenCount":3}}"#,
            ],
        );
        assert_eq!(
            out,
            vec![
                Chunk::Text("A".into()),
                Chunk::Text("B".into()),
                Chunk::Usage(Usage::new(9, 3)),
                Chunk::Stop(StopReason::EndTurn),
            ]
        );
    }
}

/// Property tests: whatever bytes a stream chunk carries, the parser gives chunks or a typed,
/// non-retryable error naming the family, never a panic.
#[cfg(test)]
mod props {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use serde_json::{Map, Number};

    use super::*;

    /// Any float JSON can hold (null for the ones it cannot).
    fn any_float() -> impl Strategy<Value = Value> {
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    /// Any JSON value, nested a few levels.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any_float(),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map("[a-zA-Z_-]{0,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The shape of a family's chunk: which keys, with values of which kind.
    #[derive(Debug, Clone)]
    enum Shape {
        /// A string, one of these or any.
        Text(&'static [&'static str]),
        /// A token count.
        Count,
        Object(Vec<(&'static str, Shape)>),
        List(Box<Shape>),
    }

    fn obj(fields: &[(&'static str, Shape)]) -> Shape {
        Shape::Object(fields.to_vec())
    }

    fn metrics() -> (&'static str, Shape) {
        (
            "amazon-bedrock-invocationMetrics",
            obj(&[
                ("inputTokenCount", Shape::Count),
                ("outputTokenCount", Shape::Count),
                ("invocationLatency", Shape::Count),
            ]),
        )
    }

    fn shape(family: ModelFamily) -> Shape {
        const STOPS: &[&str] = &[
            "end_turn",
            "max_tokens",
            "stop_sequence",
            "stop",
            "length",
            "FINISH",
            "LENGTH",
            "CONTENT_FILTERED",
            "STOP_CRITERIA_MET",
            "refusal",
        ];
        match family {
            ModelFamily::Claude => {
                let usage = obj(&[
                    ("input_tokens", Shape::Count),
                    ("output_tokens", Shape::Count),
                ]);
                obj(&[
                    (
                        "type",
                        Shape::Text(&[
                            "message_start",
                            "content_block_start",
                            "content_block_delta",
                            "content_block_stop",
                            "message_delta",
                            "message_stop",
                            "ping",
                        ]),
                    ),
                    ("message", obj(&[("usage", usage.clone())])),
                    (
                        "delta",
                        obj(&[
                            ("type", Shape::Text(&["text_delta", "input_json_delta"])),
                            ("text", Shape::Text(&[])),
                            ("stop_reason", Shape::Text(STOPS)),
                            ("stop_sequence", Shape::Text(&[])),
                        ]),
                    ),
                    ("usage", usage),
                    metrics(),
                ])
            }
            ModelFamily::ClaudeText => obj(&[
                ("completion", Shape::Text(&[])),
                ("stop_reason", Shape::Text(STOPS)),
                ("stop", Shape::Text(&["\n\nHuman:"])),
                metrics(),
            ]),
            ModelFamily::Llama2 | ModelFamily::Llama3 => obj(&[
                ("generation", Shape::Text(&[])),
                ("prompt_token_count", Shape::Count),
                ("generation_token_count", Shape::Count),
                ("stop_reason", Shape::Text(STOPS)),
                metrics(),
            ]),
            ModelFamily::TitanText => obj(&[
                ("outputText", Shape::Text(&[])),
                ("index", Shape::Count),
                ("totalOutputTextTokenCount", Shape::Count),
                ("inputTextTokenCount", Shape::Count),
                ("completionReason", Shape::Text(STOPS)),
                metrics(),
            ]),
            ModelFamily::Mistral => obj(&[
                (
                    "outputs",
                    Shape::List(Box::new(obj(&[
                        ("text", Shape::Text(&[])),
                        ("stop_reason", Shape::Text(STOPS)),
                    ]))),
                ),
                metrics(),
            ]),
            // A family added later: its parser is checked over any JSON.
            _ => obj(&[metrics()]),
        }
    }

    /// A value of `shape`, or (now and then) of another kind, or null; object keys are each
    /// present or absent, with unknown keys mixed in.
    fn plausible(shape: Shape) -> BoxedStrategy<Value> {
        let right: BoxedStrategy<Value> = match shape {
            Shape::Text([]) => any::<String>().prop_map(Value::from).boxed(),
            Shape::Text(known) => prop_oneof![
                3 => proptest::sample::select(known).prop_map(Value::from),
                1 => any::<String>().prop_map(Value::from),
            ]
            .boxed(),
            Shape::Count => prop_oneof![
                3 => (0u64..10_000).prop_map(Value::from),
                1 => any::<u64>().prop_map(Value::from),
                1 => any::<i64>().prop_map(Value::from),
                1 => any_float(),
            ]
            .boxed(),
            Shape::List(item) => vec(plausible(*item), 0..4).prop_map(Value::Array).boxed(),
            Shape::Object(fields) => {
                let fields: Vec<_> = fields
                    .into_iter()
                    .map(|(key, shape)| {
                        let value = proptest::option::weighted(0.7, plausible(shape));
                        value.prop_map(move |v| (key, v))
                    })
                    .collect();
                (fields, btree_map("[a-z_]{1,8}", any_json(), 0..2))
                    .prop_map(|(fields, extra)| {
                        let mut map: Map<String, Value> = extra.into_iter().collect();
                        for (key, value) in fields.into_iter() {
                            if let Some(value) = value {
                                map.insert(key.to_owned(), value);
                            }
                        }
                        Value::Object(map)
                    })
                    .boxed()
            }
        };
        prop_oneof![8 => right, 1 => Just(Value::Null), 1 => any_json()].boxed()
    }

    /// The families with a native stream (chat models go through ConverseStream).
    fn family() -> impl Strategy<Value = ModelFamily> {
        proptest::sample::select(
            ModelFamily::ALL
                .into_iter()
                .filter(|f| super::super::has_native_format(*f))
                .collect::<Vec<_>>(),
        )
    }

    /// A family and a run of its chunks, each plausible JSON or (rarely) arbitrary bytes.
    fn family_and_chunks() -> impl Strategy<Value = (ModelFamily, Vec<Vec<u8>>)> {
        family().prop_flat_map(|family| {
            let chunk = prop_oneof![
                9 => plausible(shape(family)).prop_map(|v| v.to_string().into_bytes()),
                1 => vec(any::<u8>(), 0..64),
            ];
            (Just(family), vec(chunk, 1..12))
        })
    }

    /// Checks one parse result: chunks with non-empty text, or the typed error.
    fn check(
        family: ModelFamily,
        parser: &ChunkParser,
        result: Result<Vec<Chunk>>,
    ) -> std::result::Result<(), TestCaseError> {
        match result {
            Ok(chunks) => {
                for chunk in &chunks {
                    match chunk {
                        Chunk::Text(text) => prop_assert!(!text.is_empty()),
                        Chunk::Stop(_) => prop_assert!(parser.stopped()),
                        Chunk::Usage(usage) => prop_assert!(*usage != Usage::default()),
                        _ => {}
                    }
                }
            }
            Err(Error::Generation {
                message, retryable, ..
            }) => {
                prop_assert!(!retryable, "a malformed chunk is not retried: {}", message);
                prop_assert!(message.contains(family.name()), "{}", message);
            }
            Err(other) => prop_assert!(false, "{family}: not a generation error: {other:?}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_give_chunks_or_a_typed_error(
            family in family(),
            payload in vec(any::<u8>(), 0..256),
        ) {
            let mut parser = ChunkParser::new(family);
            let result = parser.parse(&payload);
            check(family, &parser, result)?;
        }

        #[test]
        fn arbitrary_json_gives_chunks_or_a_typed_error(family in family(), value in any_json()) {
            let mut parser = ChunkParser::new(family);
            let result = parser.parse(value.to_string().as_bytes());
            check(family, &parser, result)?;
        }

        #[test]
        fn plausible_chunk_runs_give_chunks_or_a_typed_error(
            (family, chunks) in family_and_chunks(),
        ) {
            let mut parser = ChunkParser::new(family);
            let mut reported = Usage::default();
            for payload in &chunks {
                let result = parser.parse(payload);
                if let Ok(out) = &result {
                    for chunk in out {
                        if let Chunk::Usage(usage) = chunk {
                            // Output tokens only grow over one stream.
                            prop_assert!(usage.output_tokens >= reported.output_tokens);
                            reported = *usage;
                        }
                    }
                }
                check(family, &parser, result)?;
            }
            if let Some(Chunk::Usage(usage)) = parser.take_usage() {
                prop_assert!(usage.output_tokens >= reported.output_tokens);
            }
            prop_assert_eq!(parser.take_usage(), None, "usage is reported once");
        }

        #[test]
        fn deeply_nested_json_is_a_typed_error(family in family(), depth in 100usize..2_000) {
            let payload = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let mut parser = ChunkParser::new(family);
            let result = parser.parse(payload.as_bytes());
            prop_assert!(result.is_err());
            check(family, &parser, result)?;
        }
    }
}
