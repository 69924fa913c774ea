//! The native InvokeModel request body of each family.

use rag_core::{Error, GenerationParams, Message, ModelFamily, Prompt, Result, Role};
use serde_json::{json, Map, Value};

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

/// The request body for `family`, or an [`Error::InvalidInput`] when the prompt has the wrong
/// shape for the family or a setting the family cannot honour.
pub(crate) fn request_body(
    family: ModelFamily,
    prompt: &Prompt,
    params: &GenerationParams,
) -> Result<Value> {
    let mut body = Map::new();
    match family {
        ModelFamily::Claude => {
            let (system, messages) = chat_prompt(family, prompt)?;
            body.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
            body.insert("max_tokens".into(), json!(params.max_tokens));
            if let Some(system) = system.filter(|s| !s.is_empty()) {
                body.insert("system".into(), json!(system));
            }
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| {
                    json!({
                        "role": role_name(m.role),
                        "content": [{"type": "text", "text": m.content}],
                    })
                })
                .collect();
            body.insert("messages".into(), Value::Array(messages));
            insert_sampling(&mut body, params, "temperature", "top_p");
            insert_opt(&mut body, "top_k", params.top_k.map(Value::from));
            insert_stops(&mut body, "stop_sequences", params);
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
            body.insert("prompt".into(), json!(text));
            body.insert("max_tokens_to_sample".into(), json!(params.max_tokens));
            insert_sampling(&mut body, params, "temperature", "top_p");
            insert_opt(&mut body, "top_k", params.top_k.map(Value::from));
            insert_stops(&mut body, "stop_sequences", params);
        }
        ModelFamily::Llama2 | ModelFamily::Llama3 => {
            if !params.stop_sequences.is_empty() {
                return Err(Error::invalid_input(
                    "params.stop_sequences",
                    format!("Meta Llama models on Bedrock ({family}) take no stop sequences"),
                ));
            }
            body.insert("prompt".into(), json!(text_prompt(family, prompt)?));
            body.insert("max_gen_len".into(), json!(params.max_tokens));
            insert_sampling(&mut body, params, "temperature", "top_p");
        }
        ModelFamily::TitanText => {
            let mut config = Map::new();
            config.insert("maxTokenCount".into(), json!(params.max_tokens));
            insert_sampling(&mut config, params, "temperature", "topP");
            insert_stops(&mut config, "stopSequences", params);
            body.insert("inputText".into(), json!(text_prompt(family, prompt)?));
            body.insert("textGenerationConfig".into(), Value::Object(config));
        }
        ModelFamily::Mistral => {
            body.insert("prompt".into(), json!(text_prompt(family, prompt)?));
            body.insert("max_tokens".into(), json!(params.max_tokens));
            insert_stops(&mut body, "stop", params);
            insert_sampling(&mut body, params, "temperature", "top_p");
            insert_opt(&mut body, "top_k", params.top_k.map(Value::from));
        }
        other => {
            return Err(Error::config(format!(
            "model family {other} has no native request body here; use BedrockGenerator::converse"
        )))
        }
    }
    Ok(Value::Object(body))
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

/// An `f32` setting as the JSON number it was written as (`0.7`, not `0.699999988079071`).
fn float(v: f32) -> Value {
    v.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn insert_sampling(body: &mut Map<String, Value>, params: &GenerationParams, t: &str, p: &str) {
    insert_opt(body, t, params.temperature.map(float));
    insert_opt(body, p, params.top_p.map(float));
}

fn insert_stops(body: &mut Map<String, Value>, key: &str, params: &GenerationParams) {
    if !params.stop_sequences.is_empty() {
        body.insert(key.into(), json!(params.stop_sequences));
    }
}

fn insert_opt(body: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        body.insert(key.into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
