//! [`BedrockImageGenerator`]: an [`ImageGenerator`] over Bedrock's InvokeModel, for Amazon
//! Nova Canvas and Amazon Titan Image Generator v2.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::Client;
use rag_core::model::ImageModelProfile;
use rag_core::{Error, Image, ImageGenerator, ImageRequest, Result, Stage};
use serde::{Deserialize, Serialize};

use crate::error::{from_sdk_error, Backend};
use crate::native::F32;

const INVOKE_MODEL: &str = "InvokeModel";

/// Makes images with a text-to-image model on Amazon Bedrock: Amazon Nova Canvas
/// (`amazon.nova-canvas-v1:0`) or Amazon Titan Image Generator v2
/// (`amazon.titan-image-generator-v2:0`), one image per call, through InvokeModel.
///
/// Both take the same `TEXT_IMAGE` body (the Nova user guide's "Request and response
/// structure for image generation",
/// <https://docs.aws.amazon.com/nova/latest/userguide/image-gen-req-resp-structure.html>, and
/// Bedrock's "Amazon Titan Image Generator G1 models",
/// <https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-image.html>):
///
/// ```json
/// {"taskType": "TEXT_IMAGE",
///  "textToImageParams": {"text": "...", "negativeText": "..."},
///  "imageGenerationConfig": {"numberOfImages": 1, "width": 1024, "height": 1024,
///                            "cfgScale": 6.5, "seed": 42}}
/// ```
///
/// and answer `{"images": ["<base64>"], "error": null}`. Unset settings are left out, so the
/// model's defaults apply. [`ImageGenerator::check`] refuses what the model does not take
/// ([`ImageModelProfile::check`]) before any call, naming the field.
///
/// Errors are [`Error::Generation`] with the service's message: throttling and service faults
/// are retryable, validation is not; a prompt or an image the model's content filters block
/// (Bedrock answers "This request has been blocked by our content filters.") is a
/// non-retryable error that says so. As with [`crate::BedrockGenerator`], the SDK client's
/// own retries are off unless [`BedrockImageGeneratorBuilder::with_retry_config`] turns them
/// on: the caller owns retries.
#[derive(Debug, Clone)]
pub struct BedrockImageGenerator {
    client: Client,
    model_id: String,
    profile: ImageModelProfile,
    timeout: Duration,
}

impl BedrockImageGenerator {
    /// How long one call (with the SDK's retries, if on) may take by default: image models
    /// answer in seconds to tens of seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    /// A builder for `model_id` (an image model id or inference-profile id the image table
    /// lists, [`ImageModelProfile::for_model_id`]).
    pub fn builder(model_id: impl Into<String>) -> BedrockImageGeneratorBuilder {
        BedrockImageGeneratorBuilder {
            model_id: model_id.into(),
            client: None,
            timeout: Self::DEFAULT_TIMEOUT,
            retry_config: None,
        }
    }

    /// A generator for `model_id` with a client from the AWS environment (region, profile and
    /// credentials as `aws-config` resolves them).
    pub async fn from_env(model_id: impl Into<String>) -> Result<Self> {
        let config = crate::env_config().await?;
        Self::builder(model_id).with_sdk_config(&config).build()
    }

    /// The model or inference-profile id.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// What the model takes.
    pub fn profile(&self) -> ImageModelProfile {
        self.profile
    }

    /// The InvokeModel body this generator sends for `request`, checked as a call checks it;
    /// for inspection, logging and tests.
    pub fn request_body(&self, request: &ImageRequest) -> Result<Vec<u8>> {
        self.profile.check(request)?;
        serde_json::to_vec(&TextImageBody::new(request)).map_err(|e| {
            Error::generation(format!("the request body could not be written: {e}"), false)
        })
    }
}

#[async_trait]
impl ImageGenerator for BedrockImageGenerator {
    fn check(&self, request: &ImageRequest) -> Result<()> {
        self.profile.check(request)
    }

    async fn generate_image(&self, request: &ImageRequest) -> Result<Image> {
        let body = self.request_body(request)?;
        let call = self
            .client
            .invoke_model()
            .model_id(&self.model_id)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send();
        let output = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Generation,
                after: self.timeout,
            })?
            .map_err(|e| self.service_error(e))?;
        let answer: ImageResponse = serde_json::from_slice(output.body.as_ref()).map_err(|e| {
            Error::generation(
                format!(
                    "{INVOKE_MODEL}: {} answered with an unreadable body: {e}",
                    self.model_id
                ),
                false,
            )
        })?;
        if let Some(error) = answer.error.filter(|e| !e.trim().is_empty()) {
            return Err(self.refusal(&error));
        }
        let Some(first) = answer.images.first() else {
            return Err(Error::generation(
                format!("{INVOKE_MODEL}: {} answered with no image", self.model_id),
                false,
            ));
        };
        Image::from_base64(first).map_err(|e| {
            Error::generation(
                format!(
                    "{INVOKE_MODEL}: {} answered with an image this client cannot read: {e}",
                    self.model_id
                ),
                false,
            )
        })
    }
}

impl BedrockImageGenerator {
    /// The core error of a failed call: a content-filter refusal said plainly, everything else
    /// as the rest of the crate maps it.
    fn service_error<R>(
        &self,
        err: SdkError<aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError, R>,
    ) -> Error
    where
        R: crate::error::RawResponse,
    {
        let filtered = err
            .as_service_error()
            .and_then(|e| e.message())
            .filter(|m| is_content_filtered(m))
            .map(str::to_owned);
        match filtered {
            Some(message) => self.refusal(&message).with_source(err),
            None => from_sdk_error(Backend::Generation, INVOKE_MODEL, err),
        }
    }

    fn refusal(&self, message: &str) -> Error {
        let what = if is_content_filtered(message) {
            "the model's content filters blocked the prompt or the image; change the prompt"
        } else {
            "the model refused the request"
        };
        Error::generation(
            format!("{INVOKE_MODEL}: {}: {what} ({message})", self.model_id),
            false,
        )
    }
}

/// Whether a message says the model's content filters blocked the request or its image
/// ("This request has been blocked by our content filters.", "The generated image has been
/// blocked by our content filters.").
fn is_content_filtered(message: &str) -> bool {
    message.to_ascii_lowercase().contains("content filter")
}

/// The `TEXT_IMAGE` request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextImageBody<'a> {
    task_type: &'static str,
    text_to_image_params: TextToImageParams<'a>,
    image_generation_config: ImageGenerationConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TextToImageParams<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    negative_text: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageGenerationConfig {
    number_of_images: u32,
    width: u32,
    height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cfg_scale: Option<F32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u32>,
}

impl<'a> TextImageBody<'a> {
    fn new(request: &'a ImageRequest) -> Self {
        TextImageBody {
            task_type: "TEXT_IMAGE",
            text_to_image_params: TextToImageParams {
                text: &request.prompt,
                negative_text: request.negative_prompt.as_deref(),
            },
            image_generation_config: ImageGenerationConfig {
                number_of_images: 1,
                width: request.width,
                height: request.height,
                cfg_scale: request.cfg_scale.map(F32),
                seed: request.seed,
            },
        }
    }
}

/// The response body: base64 images, and an error when the model refused.
#[derive(Deserialize)]
struct ImageResponse {
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Builds a [`BedrockImageGenerator`]; configuration mistakes fail at [`build`](Self::build).
#[derive(Debug)]
#[must_use]
pub struct BedrockImageGeneratorBuilder {
    model_id: String,
    client: Option<Client>,
    timeout: Duration,
    retry_config: Option<RetryConfig>,
}

impl BedrockImageGeneratorBuilder {
    /// Uses this SDK client (for example the one the text generators use).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the SDK client from a loaded AWS configuration.
    pub fn with_sdk_config(self, config: &SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// How long one call may take, the SDK's retries included (default
    /// [`BedrockImageGenerator::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Turns the SDK client's retries on with `retry` (off by default: the caller owns
    /// retries, as with [`crate::BedrockGenerator`]).
    pub fn with_retry_config(mut self, retry: RetryConfig) -> Self {
        self.retry_config = Some(retry);
        self
    }

    /// Checks the configuration and builds the generator: the model must be one the image
    /// table lists.
    pub fn build(self) -> Result<BedrockImageGenerator> {
        if self.model_id.trim().is_empty() {
            return Err(Error::config("the Bedrock image model id is empty"));
        }
        let profile = ImageModelProfile::for_model_id(&self.model_id)?;
        let Some(client) = self.client else {
            return Err(Error::config(
                "no Bedrock Runtime client: call with_client or with_sdk_config, or use BedrockImageGenerator::from_env",
            ));
        };
        if self.timeout.is_zero() {
            return Err(Error::config("the image generation timeout is zero"));
        }
        let retry = self.retry_config.unwrap_or_else(RetryConfig::disabled);
        let client = Client::from_conf(client.config().to_builder().retry_config(retry).build());
        Ok(BedrockImageGenerator {
            client,
            model_id: self.model_id,
            profile,
            timeout: self.timeout,
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
    fn configuration_mistakes_fail_at_build() {
        let cases = [
            BedrockImageGenerator::builder("amazon.nova-canvas-v1:0"),
            BedrockImageGenerator::builder(" ").with_client(client()),
            BedrockImageGenerator::builder("stability.sd3-large-v1:0").with_client(client()),
            BedrockImageGenerator::builder("amazon.nova-canvas-v1:0")
                .with_client(client())
                .with_timeout(Duration::ZERO),
        ];
        for builder in cases {
            let debug = format!("{builder:?}");
            assert!(
                matches!(builder.build(), Err(Error::Config { .. })),
                "{debug}"
            );
        }
        let g = BedrockImageGenerator::builder("us.amazon.nova-canvas-v1:0")
            .with_client(client())
            .build()
            .unwrap();
        assert_eq!(g.client.config().retry_config().unwrap().max_attempts(), 1);
        assert_eq!(
            g.profile().family,
            rag_core::model::ImageModelFamily::NovaCanvas
        );
    }

    #[test]
    fn content_filter_messages_are_recognized() {
        assert!(is_content_filtered(
            "This request has been blocked by our content filters."
        ));
        assert!(is_content_filtered(
            "The generated image has been blocked by our content filters."
        ));
        assert!(!is_content_filtered("Malformed input request"));
    }
}
