//! Model ids resolved to Bedrock generators.

use std::sync::Arc;

use rag_bedrock::sdk::bedrockruntime::Client;
use rag_bedrock::{BedrockGenerator, BedrockImageGenerator};
use rag_core::{Generator, ImageGenerator, ModelFamily, ModelProfile, Result, Route};

use crate::run::Models;

/// Resolves an app's model ids to generators on one Bedrock Runtime client: Claude models on
/// Claude Messages, every other text model on ConverseStream (app nodes send chat prompts, and
/// Converse puts them in each model's own format), image models on InvokeModel.
#[derive(Debug, Clone)]
pub struct BedrockModels {
    client: Client,
}

impl BedrockModels {
    /// On `client` (one client for every model: its connections are shared).
    pub fn new(client: Client) -> Self {
        BedrockModels { client }
    }

    /// On a client made from `config` (region and credentials as `aws-config` resolved
    /// them). The client's own retries are off: the runner retries model calls before their
    /// first token, and a retried call inside the SDK would be a second, billed call.
    pub fn from_sdk_config(config: &rag_bedrock::sdk::aws_config::SdkConfig) -> Self {
        let conf = rag_bedrock::sdk::bedrockruntime::config::Builder::from(config)
            .retry_config(rag_bedrock::sdk::bedrockruntime::config::retry::RetryConfig::disabled())
            .build();
        BedrockModels::new(Client::from_conf(conf))
    }
}

impl Models for BedrockModels {
    fn generator(&self, model_id: &str) -> Result<Arc<dyn Generator>> {
        let profile = ModelProfile::for_model_id(model_id)?;
        let builder = if profile.family == ModelFamily::Claude || profile.route == Route::Converse {
            BedrockGenerator::builder(model_id)
        } else {
            BedrockGenerator::converse(model_id)
        };
        Ok(Arc::new(builder.with_client(self.client.clone()).build()?))
    }

    fn image_generator(&self, model_id: &str) -> Result<Arc<dyn ImageGenerator>> {
        Ok(Arc::new(
            BedrockImageGenerator::builder(model_id)
                .with_client(self.client.clone())
                .build()?,
        ))
    }
}
