//! The functions' settings, read from their environment variables (set by the template).
//!
//! | variable | function | meaning |
//! |---|---|---|
//! | `RAG_MODEL_ID` | ask | the Bedrock model (a model id the library knows, or an inference profile id) |
//! | `RAG_KNOWLEDGE_BASE_ID` | ask | the Bedrock knowledge base to retrieve from |
//! | `RAG_KENDRA_INDEX_ID` | ask | or: the Kendra index to retrieve from |
//! | `RAG_TABLE_NAME` | ask | the DynamoDB history table |
//! | `RAG_TTL_DAYS` | ask | days a turn is kept (the table's TTL; default 30, `0`: forever) |
//! | `RAG_DEAD_LETTER_QUEUE_URL` | ask | the SQS queue of failed asks |
//! | `RAG_CALLBACK_URL` | ask | optional: the `@connections` endpoint, behind a custom domain |
//! | `RAG_ALLOWED_ORIGINS` | connect | optional: comma-separated page origins allowed |

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use rag_bedrock::{BedrockGenerator, KnowledgeBaseRetriever};
use rag_core::{
    template_for_profile, DeadLetterSink, Error, GenerationParams, ModelProfile, Pipeline,
};
use rag_dynamodb::DynamoDbHistory;
use rag_kendra::KendraRetriever;

use crate::handler::AskHandler;
use crate::post::Callbacks;
use crate::sqs::SqsDeadLetterSink;

/// Where the ask function retrieves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieverConfig {
    /// A Bedrock knowledge base id.
    KnowledgeBase(String),
    /// A Kendra index id.
    Kendra(String),
}

/// The ask function's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskConfig {
    /// `RAG_MODEL_ID`.
    pub model_id: String,
    /// `RAG_KNOWLEDGE_BASE_ID` or `RAG_KENDRA_INDEX_ID`.
    pub retriever: RetrieverConfig,
    /// `RAG_TABLE_NAME`.
    pub table: String,
    /// `RAG_TTL_DAYS` (`None`: turns are kept).
    pub ttl: Option<Duration>,
    /// `RAG_DEAD_LETTER_QUEUE_URL`.
    pub dead_letter_queue_url: String,
    /// `RAG_CALLBACK_URL`.
    pub callback_url: Option<String>,
}

/// Reads `name` with `var`; a missing or blank value is `None`.
fn read(var: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    var(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `name`'s value, or a configuration error that names it.
fn require(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, Error> {
    read(var, name)
        .ok_or_else(|| Error::config(format!("the environment variable {name} is not set")))
}

impl AskConfig {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings with `var` (the environment, or a test's map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let model_id = require(&var, "RAG_MODEL_ID")?;
        match ModelProfile::for_model_id(&model_id) {
            Err(e) => return Err(Error::config(format!("RAG_MODEL_ID: {e}"))),
            // The answer is streamed to the client, so the model must stream.
            Ok(profile) if !profile.streams => {
                return Err(Error::config(format!(
                    "RAG_MODEL_ID {model_id:?} does not stream its answers on Bedrock"
                )))
            }
            Ok(_) => {}
        }
        let retriever = match (
            read(&var, "RAG_KNOWLEDGE_BASE_ID"),
            read(&var, "RAG_KENDRA_INDEX_ID"),
        ) {
            (Some(kb), None) => RetrieverConfig::KnowledgeBase(kb),
            (None, Some(index)) => RetrieverConfig::Kendra(index),
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "set one of RAG_KNOWLEDGE_BASE_ID and RAG_KENDRA_INDEX_ID, not both",
                ))
            }
            (None, None) => {
                return Err(Error::config(
                    "the environment variable RAG_KNOWLEDGE_BASE_ID (or RAG_KENDRA_INDEX_ID) is not set",
                ))
            }
        };
        let ttl = match read(&var, "RAG_TTL_DAYS") {
            None => Some(Duration::from_secs(30 * 86_400)),
            Some(days) => match days.parse::<u64>() {
                Ok(0) => None,
                Ok(days) if days <= 36_500 => Some(Duration::from_secs(days * 86_400)),
                _ => {
                    return Err(Error::config(format!(
                        "RAG_TTL_DAYS {days:?} is not a number of days from 0 to 36500"
                    )))
                }
            },
        };
        Ok(AskConfig {
            model_id,
            retriever,
            table: require(&var, "RAG_TABLE_NAME")?,
            ttl,
            dead_letter_queue_url: require(&var, "RAG_DEAD_LETTER_QUEUE_URL")?,
            callback_url: read(&var, "RAG_CALLBACK_URL"),
        })
    }

    /// The handler these settings describe, on the AWS clients of `sdk`: the Bedrock model
    /// with its family's prompt format, the retriever, the DynamoDB history and the SQS
    /// dead-letter sink (for the pipeline's letters and the handler's own).
    pub fn handler(&self, sdk: &SdkConfig) -> Result<AskHandler, Error> {
        let profile = ModelProfile::for_model_id(&self.model_id)?;
        // Answers of up to 1,024 tokens, as the examples' default, within the model's limit.
        let max_tokens = u32::try_from(profile.max_output_tokens)
            .unwrap_or(u32::MAX)
            .min(1_024);
        let generator = BedrockGenerator::builder(self.model_id.clone())
            .with_profile(profile)
            .with_sdk_config(sdk)
            .build()?;
        let mut history = DynamoDbHistory::builder(self.table.clone()).with_sdk_config(sdk);
        if let Some(ttl) = self.ttl {
            history = history.with_ttl(ttl);
        }
        let dead_letters: Arc<dyn DeadLetterSink> = Arc::new(SqsDeadLetterSink::new(
            aws_sdk_sqs::Client::new(sdk),
            self.dead_letter_queue_url.clone(),
        ));
        let builder = Pipeline::builder()
            .with_model_profile(profile)
            .with_template(template_for_profile(&profile))
            .with_generator(generator)
            .with_params(GenerationParams::default().with_max_tokens(max_tokens))
            .with_history(history.build()?)
            .with_dead_letters(Arc::clone(&dead_letters));
        let builder = match &self.retriever {
            RetrieverConfig::KnowledgeBase(id) => builder.with_retriever(
                KnowledgeBaseRetriever::builder(id.clone())
                    .with_sdk_config(sdk)
                    .build()?,
            ),
            RetrieverConfig::Kendra(index) => builder.with_retriever(
                KendraRetriever::builder()
                    .with_sdk_config(sdk)
                    .with_index_id(index.clone())
                    .build()?,
            ),
        };
        let mut callbacks = Callbacks::new(sdk);
        if let Some(url) = &self.callback_url {
            callbacks = callbacks.with_endpoint(url.clone());
        }
        Ok(AskHandler::new(builder.build()?, callbacks, dead_letters))
    }
}

/// `RAG_ALLOWED_ORIGINS` of the connect function: comma-separated origins, none if unset.
pub fn allowed_origins(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    read(&var, "RAG_ALLOWED_ORIGINS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("RAG_MODEL_ID", "amazon.nova-lite-v1:0"),
        ("RAG_KNOWLEDGE_BASE_ID", "KB12345678"),
        ("RAG_TABLE_NAME", "chat-history"),
        (
            "RAG_DEAD_LETTER_QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/1/dlq",
        ),
    ];

    #[test]
    fn the_settings_are_read_with_their_defaults() {
        let config = AskConfig::from_vars(vars(FULL)).unwrap();
        assert_eq!(
            config.retriever,
            RetrieverConfig::KnowledgeBase("KB12345678".into())
        );
        assert_eq!(config.ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(config.callback_url, None);
        let mut forever = FULL.to_vec();
        forever.push(("RAG_TTL_DAYS", "0"));
        assert_eq!(AskConfig::from_vars(vars(&forever)).unwrap().ttl, None);
    }

    #[test]
    fn a_missing_or_bad_setting_is_named() {
        for missing in [
            "RAG_MODEL_ID",
            "RAG_KNOWLEDGE_BASE_ID",
            "RAG_TABLE_NAME",
            "RAG_DEAD_LETTER_QUEUE_URL",
        ] {
            let without: Vec<_> = FULL
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let error = AskConfig::from_vars(vars(&without))
                .unwrap_err()
                .to_string();
            assert!(error.contains(missing), "{missing}: {error}");
        }
        let mut not_streaming = FULL.to_vec();
        not_streaming[0] = ("RAG_MODEL_ID", "meta.llama4-maverick-17b-instruct-v1:0");
        let error = AskConfig::from_vars(vars(&not_streaming))
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not stream"), "{error}");
        let mut unknown = FULL.to_vec();
        unknown[0] = ("RAG_MODEL_ID", "acme.unknown-model-v1");
        let error = AskConfig::from_vars(vars(&unknown))
            .unwrap_err()
            .to_string();
        assert!(error.contains("acme.unknown-model-v1"), "{error}");
        let mut both = FULL.to_vec();
        both.push(("RAG_KENDRA_INDEX_ID", "index"));
        assert!(AskConfig::from_vars(vars(&both)).is_err());
        let mut bad_ttl = FULL.to_vec();
        bad_ttl.push(("RAG_TTL_DAYS", "soon"));
        let error = AskConfig::from_vars(vars(&bad_ttl))
            .unwrap_err()
            .to_string();
        assert!(error.contains("RAG_TTL_DAYS"), "{error}");
    }

    #[test]
    fn origins_are_a_comma_separated_list() {
        assert_eq!(
            allowed_origins(vars(&[(
                "RAG_ALLOWED_ORIGINS",
                " https://a.example , https://b.example,"
            )])),
            ["https://a.example", "https://b.example"]
        );
        assert!(allowed_origins(vars(&[])).is_empty());
    }
}
