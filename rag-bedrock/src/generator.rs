//! [`BedrockGenerator`]: a [`Generator`] over Bedrock Runtime.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::ResponseStream;
use aws_sdk_bedrockruntime::Client;
use rag_core::model::route_for_model_id;
use rag_core::{
    Chunk, ChunkStream, Error, GenerationParams, Generator, ModelFamily, ModelProfile, Prompt,
    PromptKind, Result, Route, Stage,
};
use serde_json::Value;

use crate::cache::{add_converse_cache_point, cache_point, CachePoint, PromptCacheSupport};
use crate::converse::{converse_request, ConverseDecoder};
use crate::document::to_document;
use crate::error::{from_sdk_error, Backend};
use crate::guardrail::Guardrail;
use crate::native::{has_native_format, request_body_cached, ChunkParser};
use crate::stream::{drive, EventDecoder};

const INVOKE: &str = "InvokeModelWithResponseStream";
const CONVERSE: &str = "ConverseStream";

/// Streams answers from a model on Amazon Bedrock.
///
/// Two APIs, chosen from the model id by the model table ([`route_for_model_id`]):
/// - native: InvokeModelWithResponseStream with the family's own request body (Claude
///   Messages, Claude legacy text, Llama 2/3, Titan Text, Mistral text completion), for the ids
///   the table lists with a native family;
/// - Converse: ConverseStream, which takes the same chat request for any chat model on
///   Bedrock (Amazon Nova, Mistral Large 2, DeepSeek, Cohere, AI21 Jamba, ...), for every other
///   id. [`BedrockGenerator::converse`] picks it for any id.
///
/// Failures of the initial call and exceptions inside the stream become
/// [`Error::Generation`] with the service's message, retryable for throttling, stream, internal
/// and availability errors; a prompt the model refuses as too long becomes
/// [`Error::PromptTooLong`] with the sizes it reported; a stream silent for longer than the
/// idle timeout ends with [`Error::Timeout`].
///
/// **Retries.** The [`rag_core::Pipeline`] owns the retries of model calls (its
/// [`rag_core::RetryPolicy`] retries anything that fails before the first token, the stream's
/// own errors included), so the SDK client's retries are off: the two layers would multiply
/// (3 x 3 = 9 calls per ask under throttling). A generator used without a pipeline can turn
/// the SDK's retries on with [`BedrockGeneratorBuilder::with_retry_config`].
#[derive(Debug, Clone)]
pub struct BedrockGenerator {
    client: Client,
    model_id: String,
    api: Api,
    profile: Option<ModelProfile>,
    images: Option<bool>,
    idle_timeout: Duration,
    request_timeout: Duration,
    additional_fields: Option<Value>,
    guardrail: Option<Guardrail>,
    prompt_cache: Option<PromptCacheSupport>,
}

/// Which Bedrock Runtime API a generator calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Native(ModelFamily),
    Converse,
}

impl BedrockGenerator {
    /// How long the stream may stay silent by default before it ends with a timeout.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// How long the initial call (with the SDK's retries) may take by default.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

    /// A builder for `model_id` (a model id such as `anthropic.claude-3-sonnet-20240229-v1:0`
    /// or an inference-profile id such as `us.meta.llama3-3-70b-instruct-v1:0`) that calls the
    /// API the model table names for it: InvokeModelWithResponseStream with the family's
    /// native body for the natively called families, ConverseStream for every other id.
    pub fn builder(model_id: impl Into<String>) -> BedrockGeneratorBuilder {
        BedrockGeneratorBuilder::new(model_id.into(), false)
    }

    /// A builder for `model_id` that calls ConverseStream, for any chat model on Bedrock.
    pub fn converse(model_id: impl Into<String>) -> BedrockGeneratorBuilder {
        BedrockGeneratorBuilder::new(model_id.into(), true)
    }

    /// A generator for `model_id` (on the API the model table names, as
    /// [`BedrockGenerator::builder`]) with a client from the AWS environment (region, profile
    /// and credentials as `aws-config` resolves them); the pipeline retries its calls.
    pub async fn from_env(model_id: impl Into<String>) -> Result<Self> {
        let config = crate::env_config().await?;
        Self::builder(model_id).with_sdk_config(&config).build()
    }

    /// The model or inference-profile id.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model family whose native API is called, or `None` in Converse mode.
    pub fn family(&self) -> Option<ModelFamily> {
        match self.api {
            Api::Native(family) => Some(family),
            Api::Converse => None,
        }
    }

    /// The model's profile, when known (from the id table or given to the builder).
    pub fn profile(&self) -> Option<ModelProfile> {
        self.profile
    }

    /// Whether this generator calls ConverseStream.
    pub fn is_converse(&self) -> bool {
        self.api == Api::Converse
    }

    /// Whether the model takes images in its messages on the API this generator calls, when
    /// known: from the profile given to the builder, else from the model table (for
    /// ConverseStream, [`rag_core::model::converse_takes_images`]). A prompt with images for a
    /// model that takes none is refused before any call; `None` leaves it to Bedrock.
    pub fn takes_images(&self) -> Option<bool> {
        self.images
    }

    /// What the model's prompt cache takes, when caching is on and the model takes cache
    /// points ([`BedrockGeneratorBuilder::with_prompt_caching`]); `None` otherwise.
    pub fn prompt_cache(&self) -> Option<PromptCacheSupport> {
        self.prompt_cache
    }

    /// Where `prompt` gets its cache point, if anywhere.
    fn cache_point(&self, prompt: &Prompt) -> Option<CachePoint> {
        self.prompt_cache
            .and_then(|support| cache_point(support, prompt))
    }

    /// The guardrail Bedrock applies to this generator's calls, if any.
    pub fn guardrail(&self) -> Option<&Guardrail> {
        self.guardrail.as_ref()
    }

    /// The InvokeModel request body this generator sends for `prompt` with `params` (native
    /// mode), checked as a call would check it; for inspection, logging and tests.
    pub fn request_body(&self, prompt: &Prompt, params: &GenerationParams) -> Result<Vec<u8>> {
        self.check(params)?;
        self.check_images(prompt)?;
        match self.api {
            Api::Native(family) => self.native_body(family, prompt, params),
            Api::Converse => Err(Error::config(
                "a ConverseStream generator sends the SDK's Converse request, not a native body",
            )),
        }
    }

    /// The family's body, with the guardrail's body field when it needs one.
    fn native_body(
        &self,
        family: ModelFamily,
        prompt: &Prompt,
        params: &GenerationParams,
    ) -> Result<Vec<u8>> {
        let cache = match family {
            ModelFamily::Claude => self.cache_point(prompt),
            _ => None,
        };
        let mut body = request_body_cached(family, prompt, params, cache)?;
        if let Some(guardrail) = &self.guardrail {
            guardrail.add_to_native_body(&mut body)?;
        }
        Ok(body)
    }

    fn check(&self, params: &GenerationParams) -> Result<()> {
        params.validate()?;
        if let Some(profile) = self.profile {
            profile.check_params(&self.model_id, params)?;
        }
        Ok(())
    }

    /// Refuses images for a model known to take none (the request would fail at Bedrock, or
    /// worse, for a text-only family, be sent without them).
    fn check_images(&self, prompt: &Prompt) -> Result<()> {
        let Prompt::Chat { messages, .. } = prompt else {
            return Ok(());
        };
        if self.images == Some(false) && messages.iter().any(|m| !m.images.is_empty()) {
            let api = if self.is_converse() {
                "through ConverseStream"
            } else {
                "through its native API"
            };
            return Err(Error::invalid_input(
                "prompt.images",
                format!(
                    "{} takes no images {api}; send the prompt to a model that takes images                      (Claude 3 and later, Amazon Nova Lite or Pro, ...)",
                    self.model_id
                ),
            ));
        }
        Ok(())
    }

    async fn invoke(
        &self,
        family: ModelFamily,
        prompt: &Prompt,
        params: &GenerationParams,
    ) -> Result<ChunkStream> {
        let body = self.native_body(family, prompt, params)?;
        // The guardrail travels in the X-Amzn-Bedrock-GuardrailIdentifier,
        // X-Amzn-Bedrock-GuardrailVersion and X-Amzn-Bedrock-Trace headers
        // (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html).
        let guardrail = self.guardrail.as_ref();
        let call = self
            .client
            .invoke_model_with_response_stream()
            .model_id(&self.model_id)
            .content_type("application/json")
            .accept("application/json")
            .set_guardrail_identifier(guardrail.map(|g| g.identifier().to_owned()))
            .set_guardrail_version(guardrail.map(|g| g.version().to_owned()))
            .set_trace(guardrail.map(Guardrail::invoke_trace))
            .body(Blob::new(body))
            .send();
        let output = self
            .initial(call)
            .await?
            .map_err(|e| from_sdk_error(Backend::Generation, INVOKE, e))?;
        Ok(drive(
            output.body,
            NativeDecoder(match guardrail {
                Some(guardrail) => ChunkParser::new(family).with_guardrail(guardrail),
                None => ChunkParser::new(family),
            }),
            self.idle_timeout,
            INVOKE,
        ))
    }

    async fn converse_stream(
        &self,
        prompt: &Prompt,
        params: &GenerationParams,
    ) -> Result<ChunkStream> {
        let mut request = converse_request(
            &self.model_id,
            prompt,
            params,
            self.additional_fields.as_ref(),
        )?;
        if let Some(point) = self.cache_point(prompt) {
            add_converse_cache_point(&mut request, point)?;
        }
        let call = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
            .set_system(request.system)
            .set_messages(Some(request.messages))
            .inference_config(request.inference)
            .set_additional_model_request_fields(
                request.additional_fields.as_ref().map(to_document),
            )
            .set_guardrail_config(self.guardrail.as_ref().map(Guardrail::converse_config))
            .send();
        let output = self
            .initial(call)
            .await?
            .map_err(|e| from_sdk_error(Backend::Generation, CONVERSE, e))?;
        Ok(drive(
            output.stream,
            ConverseDecoder::new(self.guardrail.as_ref()),
            self.idle_timeout,
            CONVERSE,
        ))
    }

    /// Bounds the initial call, retries included.
    async fn initial<F: std::future::Future>(&self, call: F) -> Result<F::Output> {
        tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Generation,
                after: self.request_timeout,
            })
    }
}

#[async_trait]
impl Generator for BedrockGenerator {
    async fn generate(&self, prompt: &Prompt, params: &GenerationParams) -> Result<ChunkStream> {
        self.check(params)?;
        self.check_images(prompt)?;
        match self.api {
            Api::Native(family) => self.invoke(family, prompt, params).await,
            Api::Converse => self.converse_stream(prompt, params).await,
        }
    }

    fn accepts(&self) -> PromptKind {
        match self.api {
            Api::Native(ModelFamily::Claude) | Api::Converse => PromptKind::Chat,
            Api::Native(family) => PromptKind::Text(family),
        }
    }

    fn model_id(&self) -> Option<&str> {
        Some(&self.model_id)
    }

    /// `aws.bedrock`, the OpenTelemetry GenAI conventions' name for Amazon Bedrock.
    fn provider(&self) -> Option<&str> {
        Some("aws.bedrock")
    }
}

/// Reads InvokeModelWithResponseStream events with the family's chunk parser.
#[derive(Debug)]
struct NativeDecoder(ChunkParser);

impl EventDecoder<ResponseStream> for NativeDecoder {
    fn decode(&mut self, event: ResponseStream) -> Result<Vec<Chunk>> {
        match event {
            ResponseStream::Chunk(part) => match part.bytes {
                Some(bytes) => self.0.parse(bytes.as_ref()),
                None => Err(Error::generation(
                    format!("{INVOKE}: Bedrock sent a chunk without bytes"),
                    false,
                )),
            },
            // Event types newer than this SDK.
            _ => Ok(Vec::new()),
        }
    }

    fn stopped(&self) -> bool {
        self.0.stopped()
    }

    fn finish(&mut self) -> Vec<Chunk> {
        self.0.finish()
    }
}

/// Builds a [`BedrockGenerator`]; configuration mistakes fail at [`build`](Self::build).
#[derive(Debug)]
#[must_use]
pub struct BedrockGeneratorBuilder {
    model_id: String,
    converse: bool,
    client: Option<Client>,
    family: Option<ModelFamily>,
    profile: Option<ModelProfile>,
    idle_timeout: Duration,
    request_timeout: Duration,
    retry_config: Option<RetryConfig>,
    additional_fields: Option<Value>,
    guardrail: Option<Guardrail>,
    prompt_caching: bool,
}

impl BedrockGeneratorBuilder {
    fn new(model_id: String, converse: bool) -> Self {
        BedrockGeneratorBuilder {
            model_id,
            converse,
            client: None,
            family: None,
            profile: None,
            idle_timeout: BedrockGenerator::DEFAULT_IDLE_TIMEOUT,
            request_timeout: BedrockGenerator::DEFAULT_REQUEST_TIMEOUT,
            retry_config: None,
            additional_fields: None,
            guardrail: None,
            prompt_caching: false,
        }
    }

    /// Uses this SDK client (for example one built with an `endpoint_url`, or shared with the
    /// rest of your service).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the SDK client from a loaded AWS configuration.
    pub fn with_sdk_config(self, config: &SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// Names the model family instead of deriving it from the model id (for custom or
    /// imported models and ids the table does not know). Native mode only.
    pub fn with_family_override(mut self, family: ModelFamily) -> Self {
        self.family = Some(family);
        self
    }

    /// Gives the model's profile (family, API, context window, answer limit, sampling rules);
    /// settings it refuses are rejected before the call. Sets the family and the API unless a
    /// family is named.
    pub fn with_profile(mut self, profile: ModelProfile) -> Self {
        self.profile = Some(profile);
        self
    }

    /// How long the answer stream may stay silent before it ends with [`Error::Timeout`]
    /// (default [`BedrockGenerator::DEFAULT_IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long the initial call may take, the SDK's retries included (default
    /// [`BedrockGenerator::DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Turns the SDK client's retries on with `retry` (off by default: the
    /// [`rag_core::Pipeline`] owns retries, see [`BedrockGenerator`]). Use it for a generator
    /// called without a pipeline; the SDK retries a throttled or failed initial call, nothing
    /// retries a stream that already started.
    pub fn with_retry_config(mut self, retry: RetryConfig) -> Self {
        self.retry_config = Some(retry);
        self
    }

    /// Extra model-specific request fields for ConverseStream
    /// (`additionalModelRequestFields`), a JSON object. Converse mode only.
    pub fn with_additional_model_request_fields(mut self, fields: Value) -> Self {
        self.additional_fields = Some(fields);
        self
    }

    /// Applies `guardrail` to every call, on either API: InvokeModelWithResponseStream gets
    /// it in its guardrail headers (and, in asynchronous mode, the body's
    /// `amazon-bedrock-guardrailConfig`), ConverseStream in its `guardrailConfig`. An answer
    /// the guardrail stops ends with [`rag_core::StopReason::GuardrailIntervened`]. An
    /// identifier or version the API would refuse fails at [`build`](Self::build) with
    /// [`Error::InvalidInput`].
    pub fn with_guardrail(mut self, guardrail: Guardrail) -> Self {
        self.guardrail = Some(guardrail);
        self
    }

    /// Puts a cache point at the end of each prompt's stable prefix (the system text and the
    /// passages), for the models that take one ([`PromptCacheSupport::for_model_id`]) and only
    /// when the prefix reaches the model's minimum: a `cachePoint` block through
    /// ConverseStream, `"cache_control": {"type": "ephemeral"}` in a Claude Messages body. Off
    /// by default: a cache write costs more than plain input (25% more for Claude), so it pays
    /// when the same prefix comes back within the cache's five minutes. The tokens read from
    /// and written to the cache are in [`rag_core::Usage`].
    pub fn with_prompt_caching(mut self, on: bool) -> Self {
        self.prompt_caching = on;
        self
    }

    /// Checks the configuration and builds the generator.
    pub fn build(self) -> Result<BedrockGenerator> {
        if let Some(guardrail) = &self.guardrail {
            guardrail.validate()?;
        }
        if self.model_id.trim().is_empty() {
            return Err(Error::config("the Bedrock model id is empty"));
        }
        let Some(mut client) = self.client else {
            return Err(Error::config(
                "no Bedrock Runtime client: call with_client or with_sdk_config, or use BedrockGenerator::from_env",
            ));
        };
        for (name, timeout) in [
            ("idle", self.idle_timeout),
            ("request", self.request_timeout),
        ] {
            if timeout.is_zero() {
                return Err(Error::config(format!("the {name} timeout is zero")));
            }
        }
        // One layer owns retries: the pipeline's, unless the caller asks for the SDK's.
        let retry = self.retry_config.unwrap_or_else(RetryConfig::disabled);
        client = Client::from_conf(client.config().to_builder().retry_config(retry).build());
        let known = ModelProfile::for_model_id(&self.model_id);
        if let Some(profile) = self.profile.or_else(|| known.as_ref().ok().copied()) {
            if !profile.streams {
                return Err(Error::config(format!(
                    "Bedrock does not stream {}: its model page says the streaming operations \
                     (InvokeModelWithResponseStream, ConverseStream) are not available for it",
                    self.model_id
                )));
            }
        }
        let converse = self.converse
            || (self.family.is_none()
                && self
                    .profile
                    .map_or_else(|| route_for_model_id(&self.model_id), |p| p.route)
                    == Route::Converse);
        let api = if converse {
            if self.family.is_some() {
                return Err(Error::config(
                    "with_family_override applies to native mode; ConverseStream takes the same request for every model",
                ));
            }
            Api::Converse
        } else {
            if self.additional_fields.is_some() {
                return Err(Error::config(
                    "with_additional_model_request_fields applies to BedrockGenerator::converse",
                ));
            }
            let family = match (self.family, self.profile, &known) {
                (Some(family), ..) => family,
                (None, Some(profile), _) => profile.family,
                (None, None, Ok(profile)) => profile.family,
                // Unlisted ids go to Converse above; this is unreachable for them.
                (None, None, Err(err)) => return Err(err.clone()),
            };
            if !has_native_format(family) {
                return Err(Error::config(format!(
                    "model family {family} has no native request format here; use BedrockGenerator::converse"
                )));
            }
            Api::Native(family)
        };
        if let Some(fields) = &self.additional_fields {
            if !fields.is_object() {
                return Err(Error::config(
                    "additional model request fields must be a JSON object",
                ));
            }
        }
        // The table's profile applies only when it describes the family being called.
        let profile = self.profile.or_else(|| {
            known
                .ok()
                .filter(|p| matches!(api, Api::Native(f) if f == p.family) || api == Api::Converse)
        });
        let images = match (self.profile, api) {
            (Some(given), _) => Some(given.images),
            (None, Api::Converse) => rag_core::model::converse_takes_images(&self.model_id),
            (None, Api::Native(_)) => profile.map(|p| p.images),
        };
        let prompt_cache = if self.prompt_caching {
            PromptCacheSupport::for_model_id(&self.model_id)
        } else {
            None
        };
        Ok(BedrockGenerator {
            client,
            model_id: self.model_id,
            api,
            profile,
            images,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
            prompt_cache,
            additional_fields: self.additional_fields,
            guardrail: self.guardrail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};

    fn client() -> Client {
        let config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::for_tests())
            .endpoint_url("http://127.0.0.1:9")
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn names_its_model_and_provider_for_the_pipelines_spans() {
        let id = "us.anthropic.claude-3-5-haiku-20241022-v1:0";
        let g = BedrockGenerator::builder(id)
            .with_client(client())
            .build()
            .unwrap();
        // Through the forwarding impls too, as the pipeline holds it.
        let shared: std::sync::Arc<dyn Generator> = std::sync::Arc::new(g);
        assert_eq!(shared.model_id(), Some(id));
        assert_eq!(shared.provider(), Some("aws.bedrock"));
    }

    #[test]
    fn the_api_comes_from_the_table_the_override_or_the_caller() {
        let g = BedrockGenerator::builder("us.meta.llama3-3-70b-instruct-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        assert_eq!(g.family(), Some(ModelFamily::Llama3));
        assert_eq!(g.accepts(), PromptKind::Text(ModelFamily::Llama3));
        // Ids the table does not list, and chat models, go to ConverseStream.
        for id in [
            "my-imported-model",
            "mistral.mistral-large-2407-v1:0",
            "us.amazon.nova-pro-v1:0",
            "cohere.command-r-plus-v1:0",
        ] {
            let g = BedrockGenerator::builder(id)
                .with_client(client())
                .build()
                .unwrap();
            assert!(g.is_converse() && g.family().is_none(), "{id}");
            assert_eq!(g.accepts(), PromptKind::Chat, "{id}");
        }
        let g = BedrockGenerator::builder("my-imported-model")
            .with_client(client())
            .with_family_override(ModelFamily::Mistral)
            .build()
            .unwrap();
        assert_eq!(
            (g.family(), g.profile()),
            (Some(ModelFamily::Mistral), None)
        );
        let g = BedrockGenerator::builder("anthropic.claude-3-haiku-20240307-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        assert_eq!(g.accepts(), PromptKind::Chat);
        let g = BedrockGenerator::converse("anthropic.claude-3-haiku-20240307-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        assert!(g.is_converse());
    }

    #[test]
    fn models_that_do_not_stream_fail_at_build() {
        let err = BedrockGenerator::builder("us.meta.llama4-scout-17b-instruct-v1:0")
            .with_client(client())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains("stream"), "{err}");
    }

    #[test]
    fn the_sdk_retries_are_off_unless_asked_for() {
        let g = BedrockGenerator::builder("meta.llama3-8b-instruct-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        let retry = g.client.config().retry_config().unwrap().clone();
        assert_eq!(retry.max_attempts(), 1);
        let g = BedrockGenerator::builder("meta.llama3-8b-instruct-v1:0")
            .with_client(client())
            .with_retry_config(RetryConfig::standard().with_max_attempts(4))
            .build()
            .unwrap();
        assert_eq!(g.client.config().retry_config().unwrap().max_attempts(), 4);
    }

    #[tokio::test]
    async fn claude_4_5_refuses_temperature_with_top_p_before_any_call() {
        let g = BedrockGenerator::builder("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        let chat = Prompt::Chat {
            system: None,
            messages: vec![rag_core::Message::user("hi")],
        };
        let both = GenerationParams::default()
            .with_temperature(0.2)
            .with_top_p(0.9);
        let err = g.generate(&chat, &both).await.err().unwrap();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "params.top_p",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn configuration_mistakes_fail_at_build() {
        let cases = [
            BedrockGenerator::builder("anthropic.claude-v2"),
            BedrockGenerator::builder(" ").with_client(client()),
            BedrockGenerator::builder("anthropic.claude-v2")
                .with_client(client())
                .with_idle_timeout(Duration::ZERO),
            BedrockGenerator::converse("amazon.nova-lite-v1:0")
                .with_client(client())
                .with_family_override(ModelFamily::Claude),
            BedrockGenerator::converse("amazon.nova-lite-v1:0")
                .with_client(client())
                .with_additional_model_request_fields(serde_json::json!([1])),
            BedrockGenerator::builder("anthropic.claude-v2")
                .with_client(client())
                .with_additional_model_request_fields(serde_json::json!({})),
        ];
        for builder in cases {
            let debug = format!("{builder:?}");
            assert!(
                matches!(builder.build(), Err(Error::Config { .. })),
                "{debug}"
            );
        }
    }

    #[tokio::test]
    async fn bad_input_fails_before_any_call() {
        // The endpoint is closed: reaching it would be a retryable dispatch failure.
        let g = BedrockGenerator::builder("anthropic.claude-3-haiku-20240307-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        let prompt = Prompt::Text("\n\nHuman: hi\n\nAssistant:".into());
        let err = g
            .generate(&prompt, &GenerationParams::default())
            .await
            .err()
            .unwrap();
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
        let chat = Prompt::Chat {
            system: None,
            messages: vec![rag_core::Message::user("hi")],
        };
        let err = g
            .generate(&chat, &GenerationParams::default().with_max_tokens(5_000))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "params.max_tokens",
                    ..
                }
            ),
            "{err}"
        );
    }
}
