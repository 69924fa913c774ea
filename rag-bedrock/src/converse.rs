//! ConverseStream: the family-independent chat API.

use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseStreamOutput,
    InferenceConfiguration, Message as SdkMessage, SystemContentBlock,
};
use rag_core::{Chunk, Error, GenerationParams, Message, Prompt, Result, Role, StopReason, Usage};
use serde_json::{json, Value};

use crate::native::{chat_prompt, claude_stop_reason};
use crate::stream::EventDecoder;

/// The parts of a ConverseStream request that come from the prompt and the settings.
#[derive(Debug)]
pub(crate) struct ConverseRequest {
    pub(crate) system: Option<Vec<SystemContentBlock>>,
    pub(crate) messages: Vec<SdkMessage>,
    pub(crate) inference: InferenceConfiguration,
    pub(crate) additional_fields: Option<Value>,
}

/// Builds the request. A [`Prompt::Text`] is sent as one user message.
pub(crate) fn converse_request(
    model_id: &str,
    prompt: &Prompt,
    params: &GenerationParams,
    additional_fields: Option<&Value>,
) -> Result<ConverseRequest> {
    let single;
    let (system, messages) = match prompt {
        Prompt::Text(text) => {
            if text.trim().is_empty() {
                return Err(Error::invalid_input("prompt", "the prompt text is empty"));
            }
            single = [Message::user(text.clone())];
            (None, &single[..])
        }
        Prompt::Chat { .. } => chat_prompt("converse", prompt)?,
    };
    let messages = messages
        .iter()
        .map(|m| {
            SdkMessage::builder()
                .role(match m.role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                })
                .content(ContentBlock::Text(m.content.clone()))
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
#[derive(Debug, Default)]
pub(crate) struct ConverseDecoder {
    stopped: bool,
}

impl EventDecoder<ConverseStreamOutput> for ConverseDecoder {
    fn decode(&mut self, event: ConverseStreamOutput) -> Result<Vec<Chunk>> {
        Ok(match event {
            ConverseStreamOutput::ContentBlockDelta(delta) => match delta.delta {
                Some(ContentBlockDelta::Text(text)) if !text.is_empty() => vec![Chunk::Text(text)],
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
                vec![Chunk::Stop(reason)]
            }
            ConverseStreamOutput::Metadata(meta) => meta
                .usage
                .map(|u| {
                    Chunk::Usage(Usage {
                        input_tokens: u64::try_from(u.input_tokens).unwrap_or(0),
                        output_tokens: u64::try_from(u.output_tokens).unwrap_or(0),
                    })
                })
                .into_iter()
                .collect(),
            // messageStart, contentBlockStart/Stop and event types newer than this SDK carry
            // no answer text.
            _ => Vec::new(),
        })
    }

    fn stopped(&self) -> bool {
        self.stopped
    }

    fn finish(&mut self) -> Vec<Chunk> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_goes_where_each_model_takes_it() {
        let params = GenerationParams::default().with_top_k(20);
        let caller = json!({"inferenceConfig": {"topK": 5}, "other": 1});
        let req = converse_request(
            "us.amazon.nova-pro-v1:0",
            &Prompt::Text("hi".into()),
            &params,
            Some(&caller),
        )
        .unwrap();
        // The caller's own field wins over the derived one.
        assert_eq!(req.additional_fields, Some(caller));
        let req = converse_request(
            "anthropic.claude-3-haiku-20240307-v1:0",
            &Prompt::Text("hi".into()),
            &params,
            None,
        )
        .unwrap();
        assert_eq!(req.additional_fields, Some(json!({"top_k": 20})));
        assert_eq!(req.messages.len(), 1);
        let req = converse_request(
            "ai21.jamba-1-5-mini-v1:0",
            &Prompt::Text("hi".into()),
            &params,
            None,
        )
        .unwrap();
        assert_eq!(req.additional_fields, None);
    }
}
