//! ConverseStream: the family-independent chat API.

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseStreamOutput, ImageBlock,
    ImageFormat as SdkImageFormat, ImageSource, InferenceConfiguration, Message as SdkMessage,
    SystemContentBlock,
};
use rag_core::{
    Chunk, Error, GenerationParams, GuardrailIntervention, Image, ImageFormat, Prompt, Result,
    Role, StopReason, Usage,
};
use serde_json::{json, Value};

use crate::guardrail::{trace_assessment_json, Guardrail, GuardrailStreamProcessing};
use crate::native::{chat_prompt, check_images, claude_stop_reason, CONVERSE_IMAGE_LIMITS};
use crate::stream::EventDecoder;

/// The parts of a ConverseStream request that come from the prompt and the settings.
#[derive(Debug)]
pub(crate) struct ConverseRequest {
    pub(crate) system: Option<Vec<SystemContentBlock>>,
    pub(crate) messages: Vec<SdkMessage>,
    pub(crate) inference: InferenceConfiguration,
    pub(crate) additional_fields: Option<Value>,
}

/// Builds the request. A [`Prompt::Text`] is refused: it holds a family's own format, which
/// ConverseStream would wrap in the model's template a second time.
pub(crate) fn converse_request(
    model_id: &str,
    prompt: &Prompt,
    params: &GenerationParams,
    additional_fields: Option<&Value>,
) -> Result<ConverseRequest> {
    let (system, messages) =
        match prompt {
            Prompt::Text(_) => return Err(Error::invalid_input(
                "prompt",
                "ConverseStream takes a chat prompt (Prompt::Chat: system and messages) and puts \
                 it into the model's own format; a text prompt rendered in a family's format would \
                 be templated twice. Use ChatTemplate (or ClaudeMessagesTemplate for Claude), or \
                 call the model natively with BedrockGenerator::builder",
            )),
            Prompt::Chat { .. } => chat_prompt("converse", prompt)?,
        };
    check_images(messages, &CONVERSE_IMAGE_LIMITS)?;
    // A model that takes no system prompt in Converse (Titan; Mistral 7B and Mixtral) gets
    // the system text at the top of the first user message instead.
    let (system, folded) = match system.filter(|s| !s.is_empty()) {
        Some(system) if !takes_system_prompt(model_id) => (None, Some(system)),
        other => (other, None),
    };
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let text = match folded {
                Some(system) if i == 0 && m.content.trim().is_empty() => system.to_owned(),
                Some(system) if i == 0 => format!("{system}\n\n{}", m.content),
                _ => m.content.clone(),
            };
            // Images first, then the text unless a message of images alone has none.
            let mut content = m
                .images
                .iter()
                .map(image_block)
                .collect::<Result<Vec<_>>>()?;
            if !text.trim().is_empty() || content.is_empty() {
                content.push(ContentBlock::Text(text));
            }
            SdkMessage::builder()
                .role(match m.role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                })
                .set_content(Some(content))
                .build()
                .map_err(|e| Error::invalid_input("prompt", e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let max_tokens = i32::try_from(params.max_tokens)
        .map_err(|_| Error::invalid_input("params.max_tokens", "too large"))?;
    let inference = InferenceConfiguration::builder()
        .max_tokens(max_tokens)
        .set_temperature(params.temperature)
        .set_top_p(params.top_p)
        .set_stop_sequences(
            (!params.stop_sequences.is_empty()).then(|| params.stop_sequences.clone()),
        )
        .build();
    let mut fields = additional_fields.cloned();
    if let Some(k) = params.top_k {
        match top_k_field(model_id, k) {
            Some(extra) => merge(fields.get_or_insert_with(|| json!({})), extra),
            None => tracing::debug!(
                model_id,
                "top_k dropped: no known Converse field for this model"
            ),
        }
    }
    Ok(ConverseRequest {
        system: system
            .filter(|s| !s.is_empty())
            .map(|s| vec![SystemContentBlock::Text(s.to_owned())]),
        messages,
        inference,
        additional_fields: fields,
    })
}

/// An image as Converse's `ImageBlock`: its format and its bytes (the SDK writes them as
/// base64: `{"image": {"format": "png", "source": {"bytes": "..."}}}` on the wire).
fn image_block(image: &Image) -> Result<ContentBlock> {
    let format = match image.format() {
        ImageFormat::Png => SdkImageFormat::Png,
        ImageFormat::Jpeg => SdkImageFormat::Jpeg,
        ImageFormat::Gif => SdkImageFormat::Gif,
        ImageFormat::Webp => SdkImageFormat::Webp,
    };
    ImageBlock::builder()
        .format(format)
        .source(ImageSource::Bytes(Blob::new(image.bytes())))
        .build()
        .map(ContentBlock::Image)
        .map_err(|e| Error::invalid_input("prompt.images", e.to_string()))
}

/// Whether `model_id` takes a system prompt through Converse: Bedrock's table of Converse
/// features says no for Amazon Titan, and (as copied from it elsewhere) for Mistral 7B
/// Instruct and Mixtral 8x7B; the model table's profile says so too.
fn takes_system_prompt(model_id: &str) -> bool {
    let base = rag_core::model::base_model_id(model_id);
    let listed = rag_core::ModelProfile::for_model_id(model_id)
        .map(|p| p.system_prompt)
        .unwrap_or(true);
    listed && !base.starts_with("mistral.mistral-7b") && !base.starts_with("mistral.mixtral-8x7b")
}

/// Converse has no top-k setting; the models that take one name it in
/// `additionalModelRequestFields`, each its own way.
fn top_k_field(model_id: &str, k: u32) -> Option<Value> {
    let base = rag_core::model::base_model_id(model_id);
    if base.starts_with("anthropic.") || base.starts_with("mistral.") {
        Some(json!({ "top_k": k }))
    } else if base.starts_with("amazon.nova") {
        Some(json!({ "inferenceConfig": { "topK": k } }))
    } else if base.starts_with("cohere.") {
        Some(json!({ "k": k }))
    } else {
        None
    }
}

/// Deep-merges `extra` into `into`; values already in `into` (the caller's own fields) win.
fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        for (key, value) in extra {
            match into.get_mut(&key) {
                Some(existing) => merge(existing, value),
                None => {
                    into.insert(key, value);
                }
            }
        }
    }
}

/// Reads ConverseStream events: text deltas, the stop reason, and usage from the metadata
/// event that follows it.
///
/// With a guardrail, a `guardrail_intervened` stop is held back until the metadata event,
/// which carries the guardrail's trace (`trace.guardrail`) when it was asked for.
#[derive(Debug, Default)]
pub(crate) struct ConverseDecoder {
    stopped: bool,
    /// A guardrail was set on the call: `(keep the trace, synchronous processing)`.
    guardrail: Option<(bool, bool)>,
    /// The answer so far, with a guardrail: in synchronous mode an intervened answer is the
    /// guardrail's message alone.
    text: String,
    trace: Option<Value>,
    pending: Option<StopReason>,
}

impl ConverseDecoder {
    /// A decoder for a call made with `guardrail`, if any.
    pub(crate) fn new(guardrail: Option<&Guardrail>) -> Self {
        ConverseDecoder {
            guardrail: guardrail.map(|g| {
                (
                    g.traced(),
                    g.stream_processing() == GuardrailStreamProcessing::Sync,
                )
            }),
            ..ConverseDecoder::default()
        }
    }

    /// The intervention with what is known of it.
    fn intervention(&mut self) -> StopReason {
        let sync = self.guardrail.is_some_and(|(_, sync)| sync);
        let text = std::mem::take(&mut self.text);
        StopReason::GuardrailIntervened(Box::new(GuardrailIntervention {
            message: (sync && !text.is_empty()).then_some(text),
            trace: self.trace.take(),
        }))
    }
}

impl EventDecoder<ConverseStreamOutput> for ConverseDecoder {
    fn decode(&mut self, event: ConverseStreamOutput) -> Result<Vec<Chunk>> {
        Ok(match event {
            ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta {
                Some(ContentBlockDelta::Text(text)) if !text.is_empty() => {
                    if self.guardrail.is_some() {
                        self.text.push_str(&text);
                    }
                    vec![Chunk::Text(text)]
                }
                _ => Vec::new(),
            },
            ConverseStreamOutput::MessageStop(stop) => {
                self.stopped = true;
                let sequence = stop
                    .additional_model_response_fields
                    .as_ref()
                    .and_then(|d| d.as_object())
                    .and_then(|o| o.get("stop_sequence"))
                    .and_then(|d| d.as_string())
                    .map(str::to_owned);
                let reason: StopReason = claude_stop_reason(stop.stop_reason.as_str(), sequence);
                if self.guardrail.is_some() && matches!(reason, StopReason::GuardrailIntervened(_))
                {
                    self.pending = Some(reason);
                    return Ok(Vec::new());
                }
                vec![Chunk::Stop(reason)]
            }
            ConverseStreamOutput::Metadata(meta) => {
                if self.guardrail.is_some_and(|(trace, _)| trace) {
                    if let Some(trace) = meta.trace.as_ref().and_then(|t| t.guardrail.as_ref()) {
                        self.trace = Some(trace_assessment_json(trace));
                    }
                }
                let mut out: Vec<Chunk> = meta
                    .usage
                    .map(|u| {
                        // TokenUsage (API reference, `API_runtime_TokenUsage`) reports
                        // `inputTokens` apart from `cacheReadInputTokens` and
                        // `cacheWriteInputTokens`, as `Usage` counts them.
                        let count = |n: Option<i32>| n.and_then(|n| u64::try_from(n).ok());
                        Chunk::Usage(
                            Usage::new(
                                count(Some(u.input_tokens)).unwrap_or(0),
                                count(Some(u.output_tokens)).unwrap_or(0),
                            )
                            .with_cache(
                                count(u.cache_read_input_tokens).unwrap_or(0),
                                count(u.cache_write_input_tokens).unwrap_or(0),
                            ),
                        )
                    })
                    .into_iter()
                    .collect();
                if self.pending.take().is_some() {
                    out.push(Chunk::Stop(self.intervention()));
                }
                out
            }
            // messageStart, contentBlockStart/Stop and event types newer than this SDK carry
            // no answer text.
            _ => Vec::new(),
        })
    }

    fn stopped(&self) -> bool {
        self.stopped
    }

    fn finish(&mut self) -> Vec<Chunk> {
        match self.pending.take() {
            Some(_) => vec![Chunk::Stop(self.intervention())],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_goes_where_each_model_takes_it() {
        let params = GenerationParams::default().with_top_k(20);
        let caller = json!({"inferenceConfig": {"topK": 5}, "other": 1});
        let hi = Prompt::Chat {
            system: None,
            messages: vec![rag_core::Message::user("hi")],
        };
        let req = converse_request("us.amazon.nova-pro-v1:0", &hi, &params, Some(&caller)).unwrap();
        // The caller's own field wins over the derived one.
        assert_eq!(req.additional_fields, Some(caller));
        let req =
            converse_request("anthropic.claude-3-haiku-20240307-v1:0", &hi, &params, None).unwrap();
        assert_eq!(req.additional_fields, Some(json!({"top_k": 20})));
        assert_eq!(req.messages.len(), 1);
        let req = converse_request("ai21.jamba-1-5-mini-v1:0", &hi, &params, None).unwrap();
        assert_eq!(req.additional_fields, None);
    }

    #[test]
    fn models_without_a_system_prompt_get_it_in_the_first_message() {
        let prompt = Prompt::Chat {
            system: Some("Be brief.".into()),
            messages: vec![rag_core::Message::user("hi")],
        };
        let params = GenerationParams::default();
        let req = converse_request("amazon.titan-text-express-v1", &prompt, &params, None).unwrap();
        assert!(req.system.is_none());
        let ContentBlock::Text(text) = &req.messages[0].content[0] else {
            panic!("a text block")
        };
        assert_eq!(text, "Be brief.\n\nhi");
        let req = converse_request("amazon.nova-lite-v1:0", &prompt, &params, None).unwrap();
        assert_eq!(req.system.map(|s| s.len()), Some(1));
    }

    #[test]
    fn images_become_image_blocks_before_the_text() {
        let png = rag_core::Image::from_bytes(rag_core::testing::TINY_PNG).unwrap();
        let prompt = Prompt::Chat {
            system: Some("Be brief.".into()),
            messages: vec![rag_core::Message::user("").with_image(png.clone())],
        };
        let params = GenerationParams::default();
        let req = converse_request("amazon.nova-lite-v1:0", &prompt, &params, None).unwrap();
        let [ContentBlock::Image(block)] = req.messages[0].content.as_slice() else {
            panic!("one image block: {:?}", req.messages[0].content)
        };
        assert_eq!(block.format, SdkImageFormat::Png);
        let Some(ImageSource::Bytes(bytes)) = &block.source else {
            panic!("bytes")
        };
        assert_eq!(bytes.as_ref(), rag_core::testing::TINY_PNG);
        // Titan takes no system prompt: it becomes the text after the image.
        let req = converse_request("amazon.titan-text-express-v1", &prompt, &params, None).unwrap();
        assert!(matches!(
            req.messages[0].content.as_slice(),
            [ContentBlock::Image(_), ContentBlock::Text(t)] if t == "Be brief."
        ));
    }

    #[test]
    fn a_family_text_prompt_is_refused() {
        let text = Prompt::Text(
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>".into(),
        );
        let err = converse_request(
            "meta.llama3-8b-instruct-v1:0",
            &text,
            &GenerationParams::default(),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "prompt",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("templated twice"), "{err}");
    }
}

/// Property tests: any ConverseStream event the SDK can hand over maps to chunks, never a
/// panic, whatever its strings, numbers and documents hold.
#[cfg(test)]
mod props {
    use aws_sdk_bedrockruntime::types::{
        ContentBlockDeltaEvent, ContentBlockStopEvent, ConverseStreamMetadataEvent,
        MessageStartEvent, MessageStopEvent, StopReason as SdkStopReason, TokenUsage,
    };
    use aws_smithy_types::{Document, Number};
    use proptest::collection::{hash_map, vec};
    use proptest::prelude::*;

    use super::*;

    fn document() -> impl Strategy<Value = Document> {
        let leaf = prop_oneof![
            Just(Document::Null),
            any::<bool>().prop_map(Document::Bool),
            any::<String>().prop_map(Document::String),
            any::<u64>().prop_map(|n| Document::Number(Number::PosInt(n))),
            any::<i64>().prop_map(|n| Document::Number(Number::NegInt(n))),
            any::<f64>().prop_map(|n| Document::Number(Number::Float(n))),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Document::Array),
                hash_map(
                    prop_oneof!["stop_sequence".prop_map(String::from), "[a-z_]{0,12}"],
                    inner,
                    0..4
                )
                .prop_map(Document::Object),
            ]
        })
    }

    fn stop_reason() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "end_turn",
                "tool_use",
                "max_tokens",
                "stop_sequence",
                "guardrail_intervened",
                "content_filtered",
            ])
            .prop_map(String::from),
            any::<String>(),
        ]
    }

    fn event() -> impl Strategy<Value = ConverseStreamOutput> {
        prop_oneof![
            (any::<String>(), any::<i32>()).prop_map(|(text, index)| {
                ConverseStreamOutput::ContentBlockDelta(
                    ContentBlockDeltaEvent::builder()
                        .delta(ContentBlockDelta::Text(text))
                        .content_block_index(index)
                        .build()
                        .expect("every required field is set"),
                )
            }),
            (stop_reason(), proptest::option::of(document())).prop_map(|(reason, fields)| {
                ConverseStreamOutput::MessageStop(
                    MessageStopEvent::builder()
                        .stop_reason(SdkStopReason::from(reason.as_str()))
                        .set_additional_model_response_fields(fields)
                        .build()
                        .expect("every required field is set"),
                )
            }),
            proptest::option::of((any::<i32>(), any::<i32>(), any::<i32>())).prop_map(|usage| {
                ConverseStreamOutput::Metadata(
                    ConverseStreamMetadataEvent::builder()
                        .set_usage(usage.map(|(input, output, total)| {
                            TokenUsage::builder()
                                .input_tokens(input)
                                .output_tokens(output)
                                .total_tokens(total)
                                .build()
                                .expect("every required field is set")
                        }))
                        .build(),
                )
            }),
            Just(ConverseStreamOutput::MessageStart(
                MessageStartEvent::builder()
                    .role(ConversationRole::Assistant)
                    .build()
                    .expect("every required field is set"),
            )),
            any::<i32>().prop_map(|index| {
                ConverseStreamOutput::ContentBlockStop(
                    ContentBlockStopEvent::builder()
                        .content_block_index(index)
                        .build()
                        .expect("every required field is set"),
                )
            }),
        ]
    }

    fn stop_sequence_of(fields: Option<&Document>) -> Option<String> {
        match fields {
            Some(Document::Object(map)) => match map.get("stop_sequence") {
                Some(Document::String(s)) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn any_event_run_maps_to_chunks(events in vec(event(), 0..16)) {
            let mut decoder = ConverseDecoder::default();
            let mut stopped = false;
            for event in events {
                let expected = match &event {
                    ConverseStreamOutput::ContentBlockDelta(delta) => match &delta.delta {
                        Some(ContentBlockDelta::Text(t)) if !t.is_empty() => {
                            vec![Chunk::Text(t.clone())]
                        }
                        _ => Vec::new(),
                    },
                    ConverseStreamOutput::MessageStop(stop) => {
                        stopped = true;
                        let sequence =
                            stop_sequence_of(stop.additional_model_response_fields.as_ref());
                        vec![Chunk::Stop(claude_stop_reason(stop.stop_reason.as_str(), sequence))]
                    }
                    ConverseStreamOutput::Metadata(meta) => meta
                        .usage
                        .as_ref()
                        .map(|u| {
                            Chunk::Usage(Usage::new(u.input_tokens.max(0) as u64, u.output_tokens.max(0) as u64))
                        })
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                };
                prop_assert_eq!(decoder.decode(event).expect("events always map"), expected);
                prop_assert_eq!(decoder.stopped(), stopped);
            }
            prop_assert!(decoder.finish().is_empty());
        }
    }
}
