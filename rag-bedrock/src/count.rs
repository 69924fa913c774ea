//! [`BedrockTokenCounter`]: a model's own count of a prompt, from Bedrock's CountTokens API.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ConverseTokensRequest, CountTokensInput, InvokeModelTokensRequest,
};
use aws_sdk_bedrockruntime::Client;
use rag_core::model::base_model_id;
use rag_core::{
    Error, GenerationParams, ModelFamily, ModelProfile, Prompt, PromptCounter, Result, Stage,
};

use crate::converse::converse_request;
use crate::error::{from_sdk_error, Backend};
use crate::native::request_body;

const COUNT_TOKENS: &str = "CountTokens";

/// Counts prompts the way the model does, with Bedrock Runtime's CountTokens API, for a
/// [`rag_core::Pipeline`] that checks the template's count before each call
/// ([`rag_core::PipelineBuilder::with_prompt_counter`]).
///
/// Bedrock's user guide: "Using the CountTokens API doesn't incur charges", and the count
/// "will match the token count that would be charged if the same input were sent to the model
/// in an InvokeModel or Converse request". It serves Anthropic Claude models (3.5 and later at
/// its launch); other models answer with a ValidationException ("The provided model doesn't
/// support counting tokens"), which the pipeline reports as a warning before using the
/// template's own count. A chat prompt is counted as a Converse request, a text prompt as its
/// family's InvokeModel body. The model is named by its base id: CountTokens refuses many
/// inference-profile ids (`us.`, `global.`, ...) that the model's other calls take.
///
/// CountTokens refuses prompts over 200,000 tokens with "prompt is too long: N tokens >
/// 200000 maximum", even for models with a larger window; the N in that message is the count,
/// and it is returned as one.
#[derive(Debug, Clone)]
pub struct BedrockTokenCounter {
    client: Client,
    model_id: String,
    family: Option<ModelFamily>,
    timeout: Duration,
}

impl BedrockTokenCounter {
    /// How long one count may take by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A builder for `model_id` (a model or inference-profile id; counted under its base id).
    pub fn builder(model_id: impl Into<String>) -> BedrockTokenCounterBuilder {
        BedrockTokenCounterBuilder {
            model_id: model_id.into(),
            client: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// A counter for `model_id` with a client from the AWS environment.
    pub async fn from_env(model_id: impl Into<String>) -> Result<Self> {
        let config = crate::env_config().await?;
        Self::builder(model_id).with_sdk_config(&config).build()
    }

    /// The model id sent to CountTokens.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    fn input(&self, prompt: &Prompt, params: &GenerationParams) -> Result<CountTokensInput> {
        match prompt {
            Prompt::Chat { .. } => {
                let request = converse_request(&self.model_id, prompt, params, None)?;
                Ok(CountTokensInput::Converse(
                    ConverseTokensRequest::builder()
                        .set_system(request.system)
                        .set_messages(Some(request.messages))
                        .build(),
                ))
            }
            Prompt::Text(_) => {
                let Some(family) = self.family.filter(|f| f.is_text()) else {
                    return Err(Error::invalid_input(
                        "prompt",
                        format!(
                            "{} takes no text prompt that CountTokens could count",
                            self.model_id
                        ),
                    ));
                };
                let body = request_body(family, prompt, params)?;
                let request = InvokeModelTokensRequest::builder()
                    .body(Blob::new(body))
                    .build()
                    .map_err(|e| Error::invalid_input("prompt", e.to_string()))?;
                Ok(CountTokensInput::InvokeModel(request))
            }
        }
    }
}

#[async_trait]
impl PromptCounter for BedrockTokenCounter {
    async fn count(&self, prompt: &Prompt, params: &GenerationParams) -> Result<usize> {
        let input = self.input(prompt, params)?;
        let call = self
            .client
            .count_tokens()
            .model_id(&self.model_id)
            .input(input)
            .send();
        let output = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Prompt,
                after: self.timeout,
            })?;
        match output {
            Ok(output) => Ok(usize::try_from(output.input_tokens()).unwrap_or(0)),
            Err(err) => match from_sdk_error(Backend::Generation, COUNT_TOKENS, err) {
                // Over CountTokens' own 200,000-token cap: the message holds the count.
                Error::PromptTooLong {
                    tokens: Some(tokens),
                    ..
                } => Ok(tokens),
                other => Err(other),
            },
        }
    }
}

/// Builds a [`BedrockTokenCounter`].
#[derive(Debug)]
#[must_use]
pub struct BedrockTokenCounterBuilder {
    model_id: String,
    client: Option<Client>,
    timeout: Duration,
}

impl BedrockTokenCounterBuilder {
    /// Uses this SDK client (for example the one the generator uses).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the SDK client from a loaded AWS configuration.
    pub fn with_sdk_config(self, config: &SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// How long one count may take (default [`BedrockTokenCounter::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the configuration and builds the counter.
    pub fn build(self) -> Result<BedrockTokenCounter> {
        let base = base_model_id(self.model_id.trim());
        if base.is_empty() {
            return Err(Error::config("the Bedrock model id is empty"));
        }
        let Some(client) = self.client else {
            return Err(Error::config(
                "no Bedrock Runtime client: call with_client or with_sdk_config, or use BedrockTokenCounter::from_env",
            ));
        };
        if self.timeout.is_zero() {
            return Err(Error::config("the CountTokens timeout is zero"));
        }
        Ok(BedrockTokenCounter {
            client,
            family: ModelProfile::for_model_id(base).ok().map(|p| p.family),
            model_id: base.to_owned(),
            timeout: self.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_bedrockruntime::types::ContentBlock;

    use super::*;

    #[test]
    fn a_chat_prompt_is_counted_with_its_images() {
        let config = aws_sdk_bedrockruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::for_tests())
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let counter = BedrockTokenCounter::builder("us.anthropic.claude-3-5-sonnet-20241022-v2:0")
            .with_client(Client::from_conf(config))
            .build()
            .unwrap();
        let png = rag_core::Image::from_bytes(rag_core::testing::TINY_PNG).unwrap();
        let prompt = Prompt::Chat {
            system: None,
            messages: vec![rag_core::Message::user("What is this?").with_image(png)],
        };
        let CountTokensInput::Converse(request) = counter
            .input(&prompt, &GenerationParams::default())
            .unwrap()
        else {
            panic!("a Converse count")
        };
        let content = &request.messages.unwrap()[0].content;
        assert!(
            matches!(
                content.as_slice(),
                [ContentBlock::Image(_), ContentBlock::Text(t)] if t == "What is this?"
            ),
            "{content:?}"
        );
    }
}
