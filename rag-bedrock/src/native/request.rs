//! The native InvokeModel request body of each family.

use rag_core::{Error, GenerationParams, Message, ModelFamily, Prompt, Result, Role};
use serde::Serialize;

use crate::cache::CachePoint;

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
    request_body_cached(family, prompt, params, None)
}

/// [`request_body`] with a cache point, for the families that take one (Claude Messages:
/// `"cache_control": {"type": "ephemeral"}` on the block that ends the cached prefix, with
/// the system text as a list of text blocks when the point follows it; Anthropic's prompt
/// caching guide and Bedrock's "Prompt caching for faster model inference").
pub(crate) fn request_body_cached(
    family: ModelFamily,
    prompt: &Prompt,
    params: &GenerationParams,
    cache: Option<CachePoint>,
) -> Result<Vec<u8>> {
    let stop_sequences = params.stop_sequences.as_slice();
    let bytes = match family {
        ModelFamily::Claude => {
            let (system, messages) = chat_prompt(family, prompt)?;
            let system = system.filter(|s| !s.is_empty());
            to_bytes(&ClaudeBody {
                anthropic_version: ANTHROPIC_VERSION,
                max_tokens: params.max_tokens,
                system: system.map(|text| match cache {
                    Some(CachePoint::AfterSystem) => ClaudeSystem::Blocks([ClaudeSystemBlock {
                        kind: "text",
                        text,
                        cache_control: EPHEMERAL,
                    }]),
                    _ => ClaudeSystem::Text(text),
                }),
                messages: {
                    check_images(messages, &CLAUDE_IMAGE_LIMITS)?;
                    let mut out: Vec<ClaudeMessage<'_>> =
                        messages.iter().map(claude_message).collect();
                    if let (Some(CachePoint::AfterContext(n)), Some(first)) =
                        (cache, out.first_mut())
                    {
                        split_for_cache(first, n);
                    }
                    out
                },
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
    system: Option<ClaudeSystem<'a>>,
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
    content: Vec<ClaudeBlock<'a>>,
}

/// A content block of a Claude message. An image is
/// `{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "..."}}`:
/// Bedrock's Claude Messages page
/// (<https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html>,
/// "Multimodal prompts") and Anthropic's vision guide
/// (<https://platform.claude.com/docs/en/build-with-claude/vision>, which says "On Amazon
/// Bedrock and Google Cloud, only base64-encoded sources are currently available").
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClaudeBlock<'a> {
    Image {
        source: Base64Source<'a>,
    },
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
}

/// The system text: a string, or one text block when a cache point follows it.
#[derive(Serialize)]
#[serde(untagged)]
enum ClaudeSystem<'a> {
    Text(&'a str),
    Blocks([ClaudeSystemBlock<'a>; 1]),
}

#[derive(Serialize)]
struct ClaudeSystemBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    cache_control: CacheControl,
}

/// `{"type": "ephemeral"}`, the one cache type Claude takes.
#[derive(Serialize, Clone, Copy)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

const EPHEMERAL: CacheControl = CacheControl { kind: "ephemeral" };

/// Splits the last text block of `message` after its first `n` bytes (the passages block)
/// and marks the first part for the cache.
fn split_for_cache(message: &mut ClaudeMessage<'_>, n: usize) {
    let Some(ClaudeBlock::Text { text, .. }) = message.content.last() else {
        return;
    };
    let text: &str = text;
    if n == 0 || n >= text.len() || !text.is_char_boundary(n) {
        return;
    }
    let (context, rest) = text.split_at(n);
    message.content.pop();
    message.content.push(ClaudeBlock::Text {
        text: context,
        cache_control: Some(EPHEMERAL),
    });
    message.content.push(ClaudeBlock::Text {
        text: rest,
        cache_control: None,
    });
}

#[derive(Serialize)]
struct Base64Source<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    media_type: &'static str,
    data: Base64<'a>,
}

/// Bytes written as base64 (standard alphabet, padded) straight into the body.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

/// A message's blocks: its images first (Anthropic: "Claude works best when images come
/// before text"), then its text unless a message of images alone has none.
fn claude_message(m: &Message) -> ClaudeMessage<'_> {
    let mut content: Vec<ClaudeBlock<'_>> = m
        .images
        .iter()
        .map(|image| ClaudeBlock::Image {
            source: Base64Source {
                kind: "base64",
                media_type: image.format().media_type(),
                data: Base64(image.bytes()),
            },
        })
        .collect();
    if !m.content.trim().is_empty() || m.images.is_empty() {
        content.push(ClaudeBlock::Text {
            text: &m.content,
            cache_control: None,
        });
    }
    ClaudeMessage {
        role: role_name(m.role),
        content,
    }
}

/// How many images a request may carry, and how large each may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageLimits {
    /// The API's name, for errors.
    pub(crate) api: &'static str,
    /// The most images in one message.
    pub(crate) per_message: usize,
    /// The most images in the whole request.
    pub(crate) per_request: usize,
    /// The most bytes of one image.
    pub(crate) max_bytes: usize,
}

/// 3.75 MB, the most bytes of one image: Bedrock's Converse `Message` reference ("Each
/// image's size, height, and width must be no more than 3.75 MB, 8000 px, and 8000 px");
/// 3.75 MiB is what Anthropic's 5 MB limit on the base64 text leaves of the bytes (x 3/4).
const MAX_IMAGE_BYTES: usize = 3_932_160;

/// Claude Messages: Anthropic's vision guide takes "up to 100 [images] for models with a
/// 200k-token context window" (600 for larger ones; the smaller count is kept for every
/// Claude model), in any message.
pub(crate) const CLAUDE_IMAGE_LIMITS: ImageLimits = ImageLimits {
    api: "Claude Messages",
    per_message: 100,
    per_request: 100,
    max_bytes: MAX_IMAGE_BYTES,
};

/// Converse: "You can include up to 20 images" in a message's content (Bedrock's `Message`
/// reference, <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Message.html>).
pub(crate) const CONVERSE_IMAGE_LIMITS: ImageLimits = ImageLimits {
    api: "Converse",
    per_message: 20,
    per_request: usize::MAX,
    max_bytes: MAX_IMAGE_BYTES,
};

/// Checks the images of `messages` against `limits`. The pixel sizes (8000 x 8000 at most)
/// are left to the service: checking them would mean reading each format's header.
pub(crate) fn check_images(messages: &[Message], limits: &ImageLimits) -> Result<()> {
    let api = limits.api;
    let mut total = 0;
    for (i, m) in messages.iter().enumerate() {
        if m.images.len() > limits.per_message {
            return Err(Error::invalid_input(
                "prompt.images",
                format!(
                    "message {i} has {} images; {api} takes at most {} in a message",
                    m.images.len(),
                    limits.per_message
                ),
            ));
        }
        if let Some((j, image)) = m
            .images
            .iter()
            .enumerate()
            .find(|(_, image)| image.bytes().len() > limits.max_bytes)
        {
            return Err(Error::invalid_input(
                "prompt.images",
                format!(
                    "image {j} of message {i} is {} bytes; {api} takes images of at most {} bytes (3.75 MB)",
                    image.bytes().len(),
                    limits.max_bytes
                ),
            ));
        }
        total += m.images.len();
    }
    if total > limits.per_request {
        return Err(Error::invalid_input(
            "prompt.images",
            format!(
                "the prompt has {total} images; {api} takes at most {} in a request",
                limits.per_request
            ),
        ));
    }
    Ok(())
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
pub(crate) struct F32(pub(crate) f32);

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
    // A message of images alone is whole; one with neither text nor images is empty.
    if let Some(i) = messages
        .iter()
        .position(|m| m.content.trim().is_empty() && m.images.is_empty())
    {
        return Err(Error::invalid_input(
            "prompt",
            format!("message {i} of the chat prompt is empty"),
        ));
    }
    // Both APIs take images "only ... if the role is user" (Bedrock's Converse `Message`
    // reference; Claude's assistant turns are its own text).
    if let Some(i) = messages
        .iter()
        .position(|m| m.role == Role::Assistant && !m.images.is_empty())
    {
        return Err(Error::invalid_input(
            "prompt.images",
            format!(
                "message {i} is the assistant's and has images; only user messages take images"
            ),
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

    fn png() -> rag_core::Image {
        rag_core::Image::from_bytes(rag_core::testing::TINY_PNG).unwrap()
    }

    #[test]
    fn claude_images_go_before_the_text_and_may_stand_alone() {
        let data = png().to_base64();
        let prompt = Prompt::Chat {
            system: None,
            messages: vec![
                Message::user("What is this?").with_image(png()),
                Message::assistant("A pixel."),
                Message::user("").with_image(png()).with_image(png()),
            ],
        };
        let body = request_body(ModelFamily::Claude, &prompt, &params()).unwrap();
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}});
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A pixel."}]},
                {"role": "user", "content": [image, image]}
            ])
        );
    }

    #[test]
    fn images_only_in_user_messages_and_within_the_limits() {
        let field = |messages: Vec<Message>| {
            let prompt = Prompt::Chat {
                system: None,
                messages,
            };
            match request_body(ModelFamily::Claude, &prompt, &params()) {
                Err(Error::InvalidInput { field, .. }) => field,
                other => panic!("expected InvalidInput, got {other:?}"),
            }
        };
        assert_eq!(
            field(vec![
                Message::user("a"),
                Message::assistant("b").with_image(png())
            ]),
            "prompt.images"
        );
        let mut many = Message::user("compare");
        many.images = vec![png(); 101];
        assert_eq!(field(vec![many]), "prompt.images");
        let mut large = rag_core::testing::TINY_PNG.to_vec();
        large.resize(MAX_IMAGE_BYTES + 1, 0);
        let large = rag_core::Image::from_bytes(large).unwrap();
        assert_eq!(
            field(vec![Message::user("a").with_image(large)]),
            "prompt.images"
        );
        // Neither text nor images is still empty.
        assert_eq!(field(vec![Message::user(" ")]), "prompt");
        let mut twenty_one = Message::user("compare");
        twenty_one.images = vec![png(); 21];
        assert!(check_images(&[twenty_one.clone()], &CLAUDE_IMAGE_LIMITS).is_ok());
        assert!(check_images(&[twenty_one], &CONVERSE_IMAGE_LIMITS).is_err());
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
