//! [`OpenAiCompatGenerator`]: a [`Generator`] over an OpenAI-compatible chat completions API.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use rag_core::{
    ChunkStream, Error, GenerationParams, Generator, Prompt, PromptKind, Result, Role, Stage,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Url;
use serde_json::{json, Map, Value};

use crate::error::{send_error, status_error, ServerError, OPERATION};
use crate::stream::chunk_stream;

/// The request fields the generator sets from the prompt and the settings; extra body fields
/// may not replace them.
const RESERVED_FIELDS: [&str; 9] = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
];

/// Streams answers from a server that speaks OpenAI's chat completions API: Ollama
/// (`http://127.0.0.1:11434/v1`), vLLM (`http://127.0.0.1:8000/v1`), llama.cpp's
/// `llama-server` (`http://127.0.0.1:8080/v1`), LM Studio (`http://127.0.0.1:1234/v1`), or
/// OpenAI itself.
///
/// Each call is one `POST {base}/chat/completions` with `stream: true`; the answer is read
/// from the server-sent events as they arrive ([`crate::chunk_stream`] describes how). It
/// takes chat prompts ([`Prompt::Chat`]: the system text becomes the first message, with the
/// `system` role): the server puts them into the model's own chat template, so a family's raw
/// text prompt ([`Prompt::Text`]) is refused.
///
/// **Errors** keep the server's message and say whether a new call may succeed: 408, 409,
/// 429 and 5xx are retryable; 400, 401, 403, 404, 422 and a 429 for a used-up quota are not; a
/// prompt the server refuses as longer than the context (vLLM's and OpenAI's `maximum
/// context length is N tokens`, llama.cpp's `exceed_context_size_error`) is
/// [`Error::PromptTooLong`] with the sizes it gave, so the pipeline sends a shorter prompt
/// once. A server that cannot be reached, a stream cut before `data: [DONE]` and a stream
/// that goes silent for the idle timeout ([`Error::Timeout`]) are retryable.
///
/// **Retries.** The HTTP client never retries and follows no redirects: a retried POST is a
/// second generation, which a hosted server bills. The [`rag_core::Pipeline`] owns the
/// retries (its [`rag_core::RetryPolicy`] retries what fails before the first token).
#[derive(Clone)]
pub struct OpenAiCompatGenerator {
    client: reqwest::Client,
    endpoint: Url,
    model: String,
    api_key: Option<String>,
    request_timeout: Duration,
    idle_timeout: Duration,
    include_usage: bool,
    extra_body: Map<String, Value>,
}

impl fmt::Debug for OpenAiCompatGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatGenerator")
            .field("endpoint", &self.endpoint.as_str())
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("include_usage", &self.include_usage)
            .field("extra_body", &self.extra_body)
            .finish()
    }
}

impl OpenAiCompatGenerator {
    /// How long the call may take by default until the response's head arrives (a local
    /// server loads the model on its first call, which can take a while).
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
    /// How long the stream may stay silent by default before it ends with a timeout.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    /// A builder for the server at `base_url` (the API's root, such as
    /// `http://127.0.0.1:11434/v1`; a URL that already ends in `/chat/completions` is taken
    /// as it is) and the model the server knows as `model` (`llama3.2`,
    /// `Qwen/Qwen2.5-7B-Instruct`, ...).
    pub fn builder(
        base_url: impl Into<String>,
        model: impl Into<String>,
    ) -> OpenAiCompatGeneratorBuilder {
        OpenAiCompatGeneratorBuilder {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            include_usage: true,
            extra_body: None,
        }
    }

    /// The model name sent with each request.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The URL requests go to: `{base}/chat/completions`.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The JSON body this generator sends for `prompt` with `params`, checked as a call
    /// would check it; for inspection, logging and tests.
    pub fn request_body(&self, prompt: &Prompt, params: &GenerationParams) -> Result<Value> {
        params.validate()?;
        let (system, messages) =
            match prompt {
                Prompt::Chat { system, messages } => (system, messages),
                Prompt::Text(_) => return Err(Error::invalid_input(
                    "prompt",
                    "an OpenAI-compatible server takes a chat prompt (Prompt::Chat: system and \
                     messages) and puts it into the model's own chat template; a text prompt \
                     rendered in a family's format would be templated twice. Use ChatTemplate \
                     (rag_core::template_for_profile of a ModelFamily::Chat profile)",
                )),
            };
        if messages.is_empty() {
            return Err(Error::invalid_input(
                "prompt",
                "the chat prompt has no messages",
            ));
        }
        let mut wire = Vec::with_capacity(messages.len() + 1);
        if let Some(system) = system.as_deref().filter(|s| !s.trim().is_empty()) {
            wire.push(json!({ "role": "system", "content": system }));
        }
        for message in messages {
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            if message.images.is_empty() {
                wire.push(json!({ "role": role, "content": message.content }));
                continue;
            }
            if message.role != Role::User {
                return Err(Error::invalid_input(
                    "prompt.images",
                    "images go only in user messages",
                ));
            }
            // Content parts (the chat completions API's `image_url` parts, with the image
            // as a base64 data URL), the images before the text as for Bedrock.
            let mut parts: Vec<Value> = message
                .images
                .iter()
                .map(|image| {
                    json!({
                        "type": "image_url",
                        "image_url": {
                            "url": format!(
                                "data:{};base64,{}",
                                image.format().media_type(),
                                image.to_base64()
                            )
                        }
                    })
                })
                .collect();
            if !message.content.is_empty() {
                parts.push(json!({ "type": "text", "text": message.content }));
            }
            wire.push(json!({ "role": role, "content": parts }));
        }
        let mut body = Map::new();
        body.insert("model".into(), Value::from(self.model.as_str()));
        body.insert("messages".into(), Value::Array(wire));
        body.insert("stream".into(), Value::Bool(true));
        if self.include_usage {
            body.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        body.insert("max_tokens".into(), Value::from(params.max_tokens));
        if let Some(t) = params.temperature {
            body.insert("temperature".into(), decimal(t));
        }
        if let Some(p) = params.top_p {
            body.insert("top_p".into(), decimal(p));
        }
        // Not part of OpenAI's API (it refuses the field); vLLM, llama.cpp and LM Studio take it.
        if let Some(k) = params.top_k {
            body.insert("top_k".into(), Value::from(k));
        }
        if !params.stop_sequences.is_empty() {
            body.insert("stop".into(), json!(params.stop_sequences));
        }
        for (key, value) in &self.extra_body {
            body.insert(key.clone(), value.clone());
        }
        Ok(Value::Object(body))
    }
}

/// `value` as the JSON number its decimal form reads as (`0.2`, not `0.20000000298023224`).
fn decimal(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

#[async_trait]
impl Generator for OpenAiCompatGenerator {
    async fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream> {
        let body = self.request_body(prompt, params)?;
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(self.request_timeout, request.send())
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Generation,
                after: self.request_timeout,
            })?
            .map_err(|e| send_error(self.endpoint.as_str(), e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !status.is_success() {
            // The error body is small; a server that stalls on it still gets a status error.
            let body = tokio::time::timeout(self.idle_timeout, response.bytes())
                .await
                .ok()
                .and_then(|b| b.ok())
                .unwrap_or_default();
            return Err(status_error(status.as_u16(), &body, params.max_tokens));
        }
        if content_type.starts_with("application/json") {
            // Not a stream: an error object some servers send with 200, or a whole answer
            // from a server that ignored `stream: true`.
            let body = tokio::time::timeout(self.idle_timeout, response.bytes())
                .await
                .ok()
                .and_then(|b| b.ok())
                .unwrap_or_default();
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| ServerError::from_json(&v));
            return Err(match error {
                Some(error) => crate::error::stream_error(&error, params.max_tokens),
                None => Error::generation(
                    format!(
                        "{OPERATION}: the server answered with a JSON body, not an event \
                         stream; it does not stream chat completions (stream: true)"
                    ),
                    false,
                ),
            });
        }
        Ok(chunk_stream(
            response.bytes_stream(),
            self.idle_timeout,
            params.max_tokens,
        ))
    }

    fn accepts(&self) -> PromptKind {
        PromptKind::Chat
    }

    fn model_id(&self) -> Option<&str> {
        Some(&self.model)
    }

    /// `openai`: the OpenTelemetry GenAI conventions name the provider by the API flavour
    /// the client speaks, whichever server hosts the model (`gen_ai.request.model` and the
    /// server address tell them apart).
    fn provider(&self) -> Option<&str> {
        Some("openai")
    }
}

/// Builds an [`OpenAiCompatGenerator`]; configuration mistakes fail at
/// [`build`](Self::build).
#[derive(Clone)]
#[must_use]
pub struct OpenAiCompatGeneratorBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    request_timeout: Duration,
    idle_timeout: Duration,
    include_usage: bool,
    extra_body: Option<Value>,
}

impl fmt::Debug for OpenAiCompatGeneratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatGeneratorBuilder")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("include_usage", &self.include_usage)
            .field("extra_body", &self.extra_body)
            .finish()
    }
}

impl OpenAiCompatGeneratorBuilder {
    /// Sends `key` as `Authorization: Bearer <key>` (OpenAI, hosted vLLM, llama.cpp's
    /// `--api-key`). Without it no `Authorization` header is sent, which local servers take.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// How long the call may take until the response's head arrives: connecting, sending the
    /// request, the server's queue and prompt processing (default
    /// [`OpenAiCompatGenerator::DEFAULT_REQUEST_TIMEOUT`]). It ends with [`Error::Timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long the answer stream may stay silent, keep-alive comments included, before it
    /// ends with [`Error::Timeout`] (default [`OpenAiCompatGenerator::DEFAULT_IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether to ask for the usage chunk at the end of the stream (`stream_options:
    /// {"include_usage": true}`, on by default). Turn it off for a server that refuses
    /// `stream_options`; the answer then carries no token counts.
    pub fn with_include_usage(mut self, include: bool) -> Self {
        self.include_usage = include;
        self
    }

    /// Extra fields of the request body, a JSON object (for example `{"seed": 7}`, or
    /// Ollama's `{"keep_alive": "10m"}`); the fields the generator sets itself (`model`,
    /// `messages`, `stream`, `stream_options`, `max_tokens`, `temperature`, `top_p`, `top_k`,
    /// `stop`) are refused.
    pub fn with_extra_body(mut self, fields: Value) -> Self {
        self.extra_body = Some(fields);
        self
    }

    /// Checks the configuration and builds the generator.
    pub fn build(self) -> Result<OpenAiCompatGenerator> {
        let endpoint = endpoint(&self.base_url)?;
        if self.model.trim().is_empty() {
            return Err(Error::config("the model name is empty"));
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(Error::config(
                "the API key is empty; leave it out for a server that takes none",
            ));
        }
        for (name, timeout) in [
            ("idle", self.idle_timeout),
            ("request", self.request_timeout),
        ] {
            if timeout.is_zero() {
                return Err(Error::config(format!("the {name} timeout is zero")));
            }
        }
        let extra_body = match self.extra_body {
            None => Map::new(),
            Some(Value::Object(fields)) => {
                if let Some(key) = fields
                    .keys()
                    .find(|k| RESERVED_FIELDS.contains(&k.as_str()))
                {
                    return Err(Error::config(format!(
                        "the extra body field `{key}` is one the generator sets itself (from \
                         the prompt, GenerationParams or with_include_usage)"
                    )));
                }
                fields
            }
            Some(_) => return Err(Error::config("the extra body must be a JSON object")),
        };
        let client = reqwest::Client::builder()
            // A retried POST is a second, billed generation: the pipeline owns retries.
            .retry(reqwest::retry::never())
            // A redirected POST turns into a GET on most redirects: report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rag-openai/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config(format!("the HTTP client cannot be built: {e}")))?;
        Ok(OpenAiCompatGenerator {
            client,
            endpoint,
            model: self.model,
            api_key: self.api_key,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            include_usage: self.include_usage,
            extra_body,
        })
    }
}

/// `{base}/chat/completions`, checked: an `http` or `https` URL with a host.
fn endpoint(base_url: &str) -> Result<Url> {
    let mut url = Url::parse(base_url.trim())
        .map_err(|e| Error::config(format!("the base URL `{base_url}` is not a URL: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "rustls") => {}
        "https" => {
            return Err(Error::config(format!(
                "the base URL `{base_url}` is https, and rag-openai was built without its \
                 `rustls` feature"
            )))
        }
        other => {
            return Err(Error::config(format!(
                "the base URL `{base_url}` has the scheme `{other}`; use http or https"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::config(format!(
            "the base URL `{base_url}` has no host"
        )));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/chat/completions") {
        url.set_path(&format!("{path}/chat/completions"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Message;

    fn chat() -> Prompt {
        Prompt::Chat {
            system: Some("Be brief.".into()),
            messages: vec![
                Message::user("What is Lambda?"),
                Message::assistant("A compute service."),
                Message::user("And its limits?"),
            ],
        }
    }

    #[test]
    fn images_are_image_url_parts_before_the_text() {
        let generator = OpenAiCompatGenerator::builder("http://127.0.0.1:1/v1", "llava")
            .build()
            .unwrap();
        let image = rag_core::Image::from_bytes(rag_core::testing::TINY_PNG).unwrap();
        let prompt = Prompt::Chat {
            system: None,
            messages: vec![Message::user("What is this?").with_image(image.clone())],
        };
        let body = generator
            .request_body(&prompt, &GenerationParams::default())
            .unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", image.to_base64())}},
                {"type": "text", "text": "What is this?"}
            ])
        );
        let only_image = Prompt::Chat {
            system: None,
            messages: vec![Message::user("").with_image(image.clone())],
        };
        let body = generator
            .request_body(&only_image, &GenerationParams::default())
            .unwrap();
        assert_eq!(body["messages"][0]["content"].as_array().unwrap().len(), 1);
        let from_assistant = Prompt::Chat {
            system: None,
            messages: vec![
                Message::user("hi"),
                Message::assistant("look").with_image(image),
                Message::user("ok"),
            ],
        };
        assert!(matches!(
            generator.request_body(&from_assistant, &GenerationParams::default()),
            Err(Error::InvalidInput {
                field: "prompt.images",
                ..
            })
        ));
    }

    #[test]
    fn names_its_model_and_provider_for_the_pipelines_spans() {
        let g = OpenAiCompatGenerator::builder("http://127.0.0.1:11434/v1", "llama3.2")
            .build()
            .unwrap();
        let shared: Box<dyn Generator> = Box::new(g);
        assert_eq!(shared.model_id(), Some("llama3.2"));
        assert_eq!(shared.provider(), Some("openai"));
    }

    #[test]
    fn the_endpoint_is_the_base_plus_chat_completions() {
        for (base, expected) in [
            (
                "http://127.0.0.1:11434/v1",
                "http://127.0.0.1:11434/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:11434/v1/",
                "http://127.0.0.1:11434/v1/chat/completions",
            ),
            (
                "http://localhost:8000",
                "http://localhost:8000/chat/completions",
            ),
            (
                "http://h:1/v1/chat/completions",
                "http://h:1/v1/chat/completions",
            ),
            (
                "http://h:1/openai/v1?api-version=2024-10-21",
                "http://h:1/openai/v1/chat/completions?api-version=2024-10-21",
            ),
        ] {
            let g = OpenAiCompatGenerator::builder(base, "m").build().unwrap();
            assert_eq!(g.endpoint(), expected, "{base}");
        }
    }

    #[test]
    fn configuration_mistakes_fail_at_build() {
        let cases = [
            OpenAiCompatGenerator::builder("127.0.0.1:11434", "m"),
            OpenAiCompatGenerator::builder("ftp://h/v1", "m"),
            OpenAiCompatGenerator::builder("not a url", "m"),
            OpenAiCompatGenerator::builder("http://h/v1", " "),
            OpenAiCompatGenerator::builder("http://h/v1", "m").with_api_key(""),
            OpenAiCompatGenerator::builder("http://h/v1", "m").with_idle_timeout(Duration::ZERO),
            OpenAiCompatGenerator::builder("http://h/v1", "m").with_request_timeout(Duration::ZERO),
            OpenAiCompatGenerator::builder("http://h/v1", "m").with_extra_body(json!([1])),
            OpenAiCompatGenerator::builder("http://h/v1", "m")
                .with_extra_body(json!({"stream": false})),
        ];
        for builder in cases {
            let debug = format!("{builder:?}");
            assert!(
                matches!(builder.build(), Err(Error::Config { .. })),
                "{debug}"
            );
        }
    }

    #[test]
    fn the_body_carries_the_chat_and_the_settings() {
        let g = OpenAiCompatGenerator::builder("http://h/v1", "llama3.2")
            .with_extra_body(json!({"seed": 7}))
            .build()
            .unwrap();
        let params = GenerationParams::default()
            .with_max_tokens(256)
            .with_temperature(0.2)
            .with_top_p(0.9)
            .with_stop_sequence("\n\nUser:");
        let body = g.request_body(&chat(), &params).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is Lambda?"},
                    {"role": "assistant", "content": "A compute service."},
                    {"role": "user", "content": "And its limits?"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 256,
                "temperature": 0.2,
                "top_p": 0.9,
                "stop": ["\n\nUser:"],
                "seed": 7,
            })
        );
        let quiet = OpenAiCompatGenerator::builder("http://h/v1", "m")
            .with_include_usage(false)
            .build()
            .unwrap();
        let body = quiet
            .request_body(&chat(), &GenerationParams::default())
            .unwrap();
        assert!(body.get("stream_options").is_none(), "{body}");
        assert!(
            body.get("temperature").is_none() && body.get("stop").is_none(),
            "{body}"
        );
    }

    #[test]
    fn text_prompts_and_bad_params_are_refused_before_any_call() {
        let g = OpenAiCompatGenerator::builder("http://127.0.0.1:9/v1", "m")
            .build()
            .unwrap();
        assert_eq!(g.accepts(), PromptKind::Chat);
        let err = g
            .request_body(
                &Prompt::Text("<s>[INST] hi [/INST]".into()),
                &GenerationParams::default(),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "prompt",
                    ..
                }
            ) && !err.is_retryable(),
            "{err}"
        );
        assert!(err.to_string().contains("Prompt::Chat"), "{err}");
        let empty = Prompt::Chat {
            system: None,
            messages: vec![],
        };
        assert!(g
            .request_body(&empty, &GenerationParams::default())
            .is_err());
        let err = g
            .request_body(&chat(), &GenerationParams::default().with_temperature(3.0))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "params.temperature",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        let builder = OpenAiCompatGenerator::builder("http://h/v1", "m").with_api_key("sk-secret");
        assert!(!format!("{builder:?}").contains("sk-secret"));
        let g = builder.build().unwrap();
        let debug = format!("{g:?}");
        assert!(
            !debug.contains("sk-secret") && debug.contains("<redacted>"),
            "{debug}"
        );
    }
}
