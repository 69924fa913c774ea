//! The native InvokeModel request body of each family.

use rag_core::{Error, GenerationParams, Message, ModelFamily, Prompt, Result, Role};
use serde::Serialize;

/// The `anthropic_version` Bedrock takes for the Claude Messages API.
pub(crate) const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Whether this crate speaks `family`'s native InvokeModel format.
pub(crate) fn has_native_format(family: ModelFamily) -> bool {
    matches!(
        family,
        ModelFamily::Claude
            | ModelFamily::ClaudeText
            | ModelFamily::Llama2
            | ModelFamily::Llama3
            | ModelFamily::TitanText
            | ModelFamily::Mistral
    )
}

/// The request body for `family`, serialized, or an [`Error::InvalidInput`] when the prompt
/// has the wrong shape for the family or a setting the family cannot honour.
///
/// The bodies are typed structs over borrowed text, written by `sonic-rs` (SIMD JSON): a
/// Claude body with 60 passages is about 64 KB, and escaping it dominates the cost of
/// assembling a request (see `benches/prompt_assembly.rs`).
pub(crate) fn request_body(
    family: ModelFamily,
    prompt: &Prompt,
    params: &GenerationParams,
) -> Result<Vec<u8>> {
    let stop_sequences = params.stop_sequences.as_slice();
    let bytes = match family {
        ModelFamily::Claude => {
            let (system, messages) = chat_prompt(family, prompt)?;
            to_bytes(&ClaudeBody {
                anthropic_version: ANTHROPIC_VERSION,
                max_tokens: params.max_tokens,
                system: system.filter(|s| !s.is_empty()),
                messages: messages
                    .iter()
                    .map(|m| ClaudeMessage {
                        role: role_name(m.role),
                        content: [TextBlock {
                            kind: "text",
                            text: &m.content,
                        }],
                    })
                    .collect(),
                temperature: params.temperature.map(F32),
                top_p: params.top_p.map(F32),
                top_k: params.top_k,
                stop_sequences,
            })
        }
        ModelFamily::ClaudeText => {
            let text = text_prompt(family, prompt)?;
            // Bedrock rejects a legacy Claude prompt that is not a Human/Assistant dialogue. A
            // system text may stand before the first `\n\nHuman:` (Claude 2.1 system prompts).
            if !text.contains("\n\nHuman:") || !text.trim_end().ends_with("\n\nAssistant:") {
                return Err(Error::invalid_input(
                    "prompt",
                    "a Claude text prompt holds a \"\\n\\nHuman:\" turn and ends with \"\\n\\nAssistant:\"",
                ));
            }
            to_bytes(&ClaudeTextBody {
                prompt: text,
                max_tokens_to_sample: params.max_tokens,
                temperature: params.temperature.map(F32),
                top_p: params.top_p.map(F32),
                top_k: params.top_k,
                stop_sequences,
            })
        }
        ModelFamily::Llama2 | ModelFamily::Llama3 => {
            if !params.stop_sequences.is_empty() {
                return Err(Error::invalid_input(
                    "params.stop_sequences",
                    format!("Meta Llama models on Bedrock ({family}) take no stop sequences"),
                ));
            }
            to_bytes(&LlamaBody {
                prompt: text_prompt(family, prompt)?,
                max_gen_len: params.max_tokens,
                temperature: params.temperature.map(F32),
                top_p: params.top_p.map(F32),
            })
        }
        ModelFamily::TitanText => to_bytes(&TitanBody {
            input_text: text_prompt(family, prompt)?,
            text_generation_config: TitanConfig {
                max_token_count: params.max_tokens,
                temperature: params.temperature.map(F32),
                top_p: params.top_p.map(F32),
                stop_sequences,
            },
        }),
        ModelFamily::Mistral => to_bytes(&MistralBody {
            prompt: text_prompt(family, prompt)?,
            max_tokens: params.max_tokens,
            stop: stop_sequences,
            temperature: params.temperature.map(F32),
            top_p: params.top_p.map(F32),
            top_k: params.top_k,
        }),
        other => {
            return Err(Error::config(format!(
            "model family {other} has no native request body here; use BedrockGenerator::converse"
        )))
        }
    };
    bytes.map_err(|e| {
        Error::generation(format!("the request body could not be written: {e}"), false)
    })
}

fn to_bytes(body: &impl Serialize) -> std::result::Result<Vec<u8>, sonic_rs::Error> {
    sonic_rs::to_vec(body)
}

fn no_stops(stops: &&[String]) -> bool {
    stops.is_empty()
}

/// Claude Messages (Bedrock's `model-parameters-anthropic-claude-messages` page).
#[derive(Serialize)]
struct ClaudeBody<'a> {
    anthropic_version: &'static str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<ClaudeMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "no_stops")]
    stop_sequences: &'a [String],
}

#[derive(Serialize)]
struct ClaudeMessage<'a> {
    role: &'static str,
    content: [TextBlock<'a>; 1],
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

/// Claude legacy text completions.
#[derive(Serialize)]
struct ClaudeTextBody<'a> {
    prompt: &'a str,
    max_tokens_to_sample: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "no_stops")]
    stop_sequences: &'a [String],
}

/// Meta Llama (Bedrock's `model-parameters-meta` page): no top-k, no stop sequences.
#[derive(Serialize)]
struct LlamaBody<'a> {
    prompt: &'a str,
    max_gen_len: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<F32>,
}

/// Amazon Titan Text.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanBody<'a> {
    input_text: &'a str,
    text_generation_config: TitanConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanConfig<'a> {
    max_token_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<F32>,
    #[serde(skip_serializing_if = "no_stops")]
    stop_sequences: &'a [String],
}

/// Mistral text completion (Bedrock's `model-parameters-mistral-text-completion` page).
#[derive(Serialize)]
struct MistralBody<'a> {
    prompt: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "no_stops")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
}

/// An `f32` setting written as the decimal it was given as (`0.7`, not
/// `0.699999988079071`).
struct F32(f32);

impl Serialize for F32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let shortest: f64 = self.0.to_string().parse().unwrap_or(f64::from(self.0));
        s.serialize_f64(shortest)
    }
}

/// The text of a [`Prompt::Text`], refusing a chat prompt.
fn text_prompt(family: ModelFamily, prompt: &Prompt) -> Result<&str> {
    match prompt {
        Prompt::Text(text) if text.trim().is_empty() => {
            Err(Error::invalid_input("prompt", "the prompt text is empty"))
        }
        Prompt::Text(text) => Ok(text),
        Prompt::Chat { .. } => Err(Error::invalid_input(
            "prompt",
            format!(
                "model family {family} takes a text prompt (Prompt::Text) rendered in its own \
                 format, but got Prompt::Chat; use the family's template, or \
                 BedrockGenerator::converse for chat prompts"
            ),
        )),
    }
}

/// The system text and messages of a [`Prompt::Chat`], checked the way the Messages API
/// checks them: at least one message, the first from the user, roles alternating.
pub(crate) fn chat_prompt(
    family: impl std::fmt::Display,
    prompt: &Prompt,
) -> Result<(Option<&str>, &[Message])> {
    match prompt {
        Prompt::Chat { system, messages } => {
            check_messages(messages)?;
            Ok((system.as_deref(), messages))
        }
        Prompt::Text(_) => Err(Error::invalid_input(
            "prompt",
            format!(
                "model family {family} takes a chat prompt (Prompt::Chat: system and messages), \
                 but got Prompt::Text"
            ),
        )),
    }
}

fn check_messages(messages: &[Message]) -> Result<()> {
    let Some(first) = messages.first() else {
        return Err(Error::invalid_input(
            "prompt",
            "the chat prompt has no messages",
        ));
    };
    if first.role != Role::User {
        return Err(Error::invalid_input(
            "prompt",
            "the first message of a chat prompt must be the user's",
        ));
    }
    if let Some(i) = messages.iter().position(|m| m.content.trim().is_empty()) {
        return Err(Error::invalid_input(
            "prompt",
            format!("message {i} of the chat prompt is empty"),
        ));
    }
    if let Some(i) = messages.windows(2).position(|w| w[0].role == w[1].role) {
        return Err(Error::invalid_input(
            "prompt",
            format!(
                "messages {} and {} have the same role; roles must alternate",
                i,
                i + 1
            ),
        ));
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn request_body(
        family: ModelFamily,
        prompt: &Prompt,
        params: &GenerationParams,
    ) -> Result<Value> {
        super::request_body(family, prompt, params)
            .map(|bytes| serde_json::from_slice(&bytes).expect("the body is JSON"))
    }

    fn params() -> GenerationParams {
        GenerationParams::default()
            .with_max_tokens(300)
            .with_temperature(0.7)
            .with_top_p(0.9)
            .with_top_k(40)
    }

    #[test]
    fn llama_drops_top_k_and_refuses_stop_sequences() {
        let body =
            request_body(ModelFamily::Llama3, &Prompt::Text("hi".into()), &params()).unwrap();
        assert_eq!(
            body,
            json!({"prompt": "hi", "max_gen_len": 300, "temperature": 0.7, "top_p": 0.9})
        );
        let err = request_body(
            ModelFamily::Llama2,
            &Prompt::Text("hi".into()),
            &params().with_stop_sequence("###"),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                field: "params.stop_sequences",
                ..
            }
        ));
    }

    #[test]
    fn wrong_prompt_shapes_are_rejected_with_the_family_named() {
        let chat = Prompt::Chat {
            system: None,
            messages: vec![Message::user("hi")],
        };
        let err = request_body(ModelFamily::Mistral, &chat, &params()).unwrap_err();
        assert!(err.to_string().contains("mistral"), "{err}");
        assert!(!err.is_retryable());
        let err =
            request_body(ModelFamily::Claude, &Prompt::Text("hi".into()), &params()).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidInput {
                field: "prompt",
                ..
            }
        ));
    }

    #[test]
    fn chat_prompts_must_start_with_the_user_and_alternate() {
        let bad = [
            vec![],
            vec![Message::assistant("hello")],
            vec![Message::user("a"), Message::user("b")],
            vec![Message::user("a"), Message::assistant(" ")],
        ];
        for messages in bad {
            let prompt = Prompt::Chat {
                system: None,
                messages,
            };
            assert!(request_body(ModelFamily::Claude, &prompt, &params()).is_err());
        }
    }

    #[test]
    fn claude_text_prompts_must_be_a_human_assistant_dialogue() {
        let ok = Prompt::Text("\n\nHuman: hi\n\nAssistant:".into());
        assert!(request_body(ModelFamily::ClaudeText, &ok, &params()).is_ok());
        let with_system = Prompt::Text("Be brief.\n\nHuman: hi\n\nAssistant:".into());
        assert!(request_body(ModelFamily::ClaudeText, &with_system, &params()).is_ok());
        let no_answer_turn = Prompt::Text("\n\nHuman: hi".into());
        assert!(request_body(ModelFamily::ClaudeText, &no_answer_turn, &params()).is_err());
        let bad = Prompt::Text("hi".into());
        let err = request_body(ModelFamily::ClaudeText, &bad, &params()).unwrap_err();
        assert!(err.to_string().contains("Human:"), "{err}");
    }

    #[test]
    fn unset_settings_are_left_out() {
        let body = request_body(
            ModelFamily::TitanText,
            &Prompt::Text("User: hi\nBot:".into()),
            &GenerationParams::default(),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"inputText": "User: hi\nBot:", "textGenerationConfig": {"maxTokenCount": 1024}})
        );
    }
}
