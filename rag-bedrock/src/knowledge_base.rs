//! [`KnowledgeBaseRetriever`]: a [`Retriever`] over Bedrock Knowledge Bases.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockagentruntime::types::{
    FilterAttribute, KnowledgeBaseQuery, KnowledgeBaseRetrievalConfiguration,
    KnowledgeBaseRetrievalResult, KnowledgeBaseVectorSearchConfiguration, RetrievalFilter,
    RetrievalResultLocation,
};
use aws_sdk_bedrockagentruntime::Client;
use rag_core::{Error, Filter, Passage, Result, RetrievalRequest, Retriever, Stage};
use serde_json::Value;

use crate::document::{to_document, to_json};
use crate::error::{from_sdk_error, Backend};

const RETRIEVE: &str = "Retrieve";

/// Retrieves passages from an Amazon Bedrock knowledge base with the Retrieve API.
///
/// `top_k` becomes `numberOfResults`, clamped to the service's range `1..=100`. Filters are
/// translated to the knowledge base's filter shape: [`Filter::Equals`], [`Filter::In`],
/// [`Filter::And`], [`Filter::Or`], and [`Filter::Not`] of an `Equals` or `In`; a
/// [`Filter::Raw`] is the knowledge base's own JSON filter (`{"equals": {"key": .., "value": ..}}`,
/// `{"andAll": [..]}`, ...), passed through. A filter that cannot be expressed is an
/// [`Error::InvalidInput`], never ignored. Each result becomes a [`Passage`] with the chunk
/// text, its source location (S3 URI, web URL, ...) as `uri`, its score, and its metadata as
/// attributes.
#[derive(Debug, Clone)]
pub struct KnowledgeBaseRetriever {
    client: Client,
    knowledge_base_id: String,
    timeout: Duration,
}

impl KnowledgeBaseRetriever {
    /// The most results one Retrieve call returns.
    pub const MAX_RESULTS: usize = 100;
    /// How long a Retrieve call (with the SDK's retries) may take by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A builder for the knowledge base `knowledge_base_id`.
    pub fn builder(knowledge_base_id: impl Into<String>) -> KnowledgeBaseRetrieverBuilder {
        KnowledgeBaseRetrieverBuilder {
            knowledge_base_id: knowledge_base_id.into(),
            client: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// A retriever for `knowledge_base_id` with a client from the AWS environment.
    pub async fn from_env(knowledge_base_id: impl Into<String>) -> Result<Self> {
        let config = crate::env_config().await?;
        Self::builder(knowledge_base_id)
            .with_sdk_config(&config)
            .build()
    }

    /// The knowledge base id.
    pub fn knowledge_base_id(&self) -> &str {
        &self.knowledge_base_id
    }
}

/// Builds a [`KnowledgeBaseRetriever`].
#[derive(Debug)]
#[must_use]
pub struct KnowledgeBaseRetrieverBuilder {
    knowledge_base_id: String,
    client: Option<Client>,
    timeout: Duration,
}

impl KnowledgeBaseRetrieverBuilder {
    /// Uses this Bedrock Agent Runtime client.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the client from a loaded AWS configuration.
    pub fn with_sdk_config(self, config: &SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// How long one Retrieve call may take, the SDK's retries included (default
    /// [`KnowledgeBaseRetriever::DEFAULT_TIMEOUT`]); past it the call fails with
    /// [`Error::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the configuration and builds the retriever.
    pub fn build(self) -> Result<KnowledgeBaseRetriever> {
        if self.timeout.is_zero() {
            return Err(Error::config("the Retrieve timeout is zero"));
        }
        let id = self.knowledge_base_id.trim();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::config(format!(
                "`{}` is not a knowledge base id (letters and digits, such as `KB12345678`)",
                self.knowledge_base_id
            )));
        }
        let client = self.client.ok_or_else(|| {
            Error::config(
                "no Bedrock Agent Runtime client: call with_client or with_sdk_config, or use KnowledgeBaseRetriever::from_env",
            )
        })?;
        Ok(KnowledgeBaseRetriever {
            client,
            knowledge_base_id: id.to_owned(),
            timeout: self.timeout,
        })
    }
}

#[async_trait]
impl Retriever for KnowledgeBaseRetriever {
    async fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>> {
        if req.query.trim().is_empty() {
            return Err(Error::invalid_input("query", "the query is empty"));
        }
        if req.top_k == 0 {
            return Ok(Vec::new());
        }
        let filter = req.filter.as_ref().map(to_kb_filter).transpose()?;
        let number_of_results = req.top_k.min(KnowledgeBaseRetriever::MAX_RESULTS) as i32;
        let search = KnowledgeBaseVectorSearchConfiguration::builder()
            .number_of_results(number_of_results)
            .set_filter(filter)
            .build();
        let query = KnowledgeBaseQuery::builder()
            .text(req.query.clone())
            .build();
        let call = self
            .client
            .retrieve()
            .knowledge_base_id(&self.knowledge_base_id)
            .retrieval_query(query)
            .retrieval_configuration(
                KnowledgeBaseRetrievalConfiguration::builder()
                    .vector_search_configuration(search)
                    .build(),
            )
            .send();
        let output = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Retrieval,
                after: self.timeout,
            })?
            .map_err(|e| from_sdk_error(Backend::Retrieval, RETRIEVE, e))?;
        Ok(output
            .retrieval_results
            .into_iter()
            .take(req.top_k)
            .enumerate()
            .map(|(i, r)| to_passage(i, r))
            .collect())
    }
}

fn to_passage(index: usize, result: KnowledgeBaseRetrievalResult) -> Passage {
    let uri = result.location.as_ref().and_then(location_uri);
    let attributes: BTreeMap<String, Value> = result
        .metadata
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect();
    // The service's chunk id, when the data source reports one; else the rank.
    let id = attributes
        .get("x-amz-bedrock-kb-chunk-id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(result.document_id)
        .unwrap_or_else(|| format!("kb-result-{}", index + 1));
    Passage {
        id,
        text: result.content.map(|c| c.text).unwrap_or_default(),
        title: None,
        uri,
        score: result.score.map(|s| s as f32),
        attributes,
    }
}

/// The document's address, whatever kind of data source it came from.
fn location_uri(location: &RetrievalResultLocation) -> Option<String> {
    location
        .s3_location
        .as_ref()
        .and_then(|l| l.uri.clone())
        .or_else(|| location.web_location.as_ref().and_then(|l| l.url.clone()))
        .or_else(|| {
            location
                .confluence_location
                .as_ref()
                .and_then(|l| l.url.clone())
        })
        .or_else(|| {
            location
                .salesforce_location
                .as_ref()
                .and_then(|l| l.url.clone())
        })
        .or_else(|| {
            location
                .share_point_location
                .as_ref()
                .and_then(|l| l.url.clone())
        })
        .or_else(|| {
            location
                .one_drive_location
                .as_ref()
                .and_then(|l| l.url.clone())
        })
        .or_else(|| {
            location
                .google_drive_location
                .as_ref()
                .and_then(|l| l.url.clone())
        })
        .or_else(|| {
            location
                .kendra_document_location
                .as_ref()
                .and_then(|l| l.uri.clone())
        })
        .or_else(|| {
            location
                .custom_document_location
                .as_ref()
                .and_then(|l| l.id.clone())
        })
}

/// A core filter in the knowledge base's shape.
pub(crate) fn to_kb_filter(filter: &Filter) -> Result<RetrievalFilter> {
    Ok(match filter {
        Filter::Equals { key, value } => RetrievalFilter::Equals(attribute(key, value)?),
        Filter::In { key, values } => {
            RetrievalFilter::In(attribute(key, &Value::Array(values.clone()))?)
        }
        Filter::And(filters) => combine(filters, "And", RetrievalFilter::AndAll)?,
        Filter::Or(filters) => combine(filters, "Or", RetrievalFilter::OrAll)?,
        Filter::Not(inner) => match inner.as_ref() {
            Filter::Equals { key, value } => RetrievalFilter::NotEquals(attribute(key, value)?),
            Filter::In { key, values } => {
                RetrievalFilter::NotIn(attribute(key, &Value::Array(values.clone()))?)
            }
            _ => {
                return Err(Error::invalid_input(
                    "filter",
                    "Bedrock Knowledge Bases can negate only Equals and In filters",
                ))
            }
        },
        Filter::Raw(json) => raw_filter(json)?,
        _ => {
            return Err(Error::invalid_input(
                "filter",
                "this filter kind has no Bedrock Knowledge Bases form",
            ))
        }
    })
}

/// `andAll` / `orAll` take at least two filters: one is used alone, none is an error.
fn combine(
    filters: &[Filter],
    name: &str,
    make: fn(Vec<RetrievalFilter>) -> RetrievalFilter,
) -> Result<RetrievalFilter> {
    let mut converted = filters
        .iter()
        .map(to_kb_filter)
        .collect::<Result<Vec<_>>>()?;
    match converted.len() {
        0 => Err(Error::invalid_input(
            "filter",
            format!("an {name} filter needs at least one filter"),
        )),
        1 => Ok(converted.remove(0)),
        _ => Ok(make(converted)),
    }
}

fn attribute(key: &str, value: &Value) -> Result<FilterAttribute> {
    FilterAttribute::builder()
        .key(key)
        .value(to_document(value))
        .build()
        .map_err(|e| Error::invalid_input("filter", e.to_string()))
}

/// The knowledge base's own JSON filter shape, as documented for `RetrievalFilter`.
fn raw_filter(json: &Value) -> Result<RetrievalFilter> {
    let invalid = |msg: String| Error::invalid_input("filter", msg);
    let obj = json.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        invalid(format!(
            "a raw knowledge base filter is an object with one operator key, got {json}"
        ))
    })?;
    let (op, operand) = obj.iter().next().expect("one key");
    let list = |operand: &Value| -> Result<Vec<RetrievalFilter>> {
        operand
            .as_array()
            .ok_or_else(|| invalid(format!("`{op}` takes an array of filters")))?
            .iter()
            .map(raw_filter)
            .collect()
    };
    let attr = |operand: &Value| -> Result<FilterAttribute> {
        let key = operand.get("key").and_then(Value::as_str);
        let value = operand.get("value");
        match (key, value) {
            (Some(key), Some(value)) => attribute(key, value),
            _ => Err(invalid(format!(
                "`{op}` takes {{\"key\": string, \"value\": ..}}, got {operand}"
            ))),
        }
    };
    Ok(match op.as_str() {
        "andAll" => RetrievalFilter::AndAll(list(operand)?),
        "orAll" => RetrievalFilter::OrAll(list(operand)?),
        "equals" => RetrievalFilter::Equals(attr(operand)?),
        "notEquals" => RetrievalFilter::NotEquals(attr(operand)?),
        "greaterThan" => RetrievalFilter::GreaterThan(attr(operand)?),
        "greaterThanOrEquals" => RetrievalFilter::GreaterThanOrEquals(attr(operand)?),
        "lessThan" => RetrievalFilter::LessThan(attr(operand)?),
        "lessThanOrEquals" => RetrievalFilter::LessThanOrEquals(attr(operand)?),
        "in" => RetrievalFilter::In(attr(operand)?),
        "notIn" => RetrievalFilter::NotIn(attr(operand)?),
        "startsWith" => RetrievalFilter::StartsWith(attr(operand)?),
        "listContains" => RetrievalFilter::ListContains(attr(operand)?),
        "stringContains" => RetrievalFilter::StringContains(attr(operand)?),
        other => {
            return Err(invalid(format!(
                "unknown knowledge base filter operator `{other}`"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn core_filters_map_to_the_knowledge_base_shape() {
        let filter = Filter::And(vec![
            Filter::Equals {
                key: "lang".into(),
                value: json!("en"),
            },
            Filter::Or(vec![Filter::In {
                key: "year".into(),
                values: vec![json!(2023), json!(2024)],
            }]),
            Filter::Not(Box::new(Filter::Equals {
                key: "draft".into(),
                value: json!(true),
            })),
        ]);
        let RetrievalFilter::AndAll(parts) = to_kb_filter(&filter).unwrap() else {
            panic!("not andAll")
        };
        assert_eq!(parts.len(), 3);
        assert!(matches!(&parts[0], RetrievalFilter::Equals(a) if a.key == "lang"));
        assert!(matches!(&parts[1], RetrievalFilter::In(a) if a.key == "year"));
        assert!(matches!(&parts[2], RetrievalFilter::NotEquals(a) if a.key == "draft"));
    }

    #[test]
    fn filters_without_a_knowledge_base_form_are_refused() {
        let bad = [
            Filter::Not(Box::new(Filter::And(vec![]))),
            Filter::Or(vec![]),
            Filter::Raw(json!({"matches": {"key": "a", "value": 1}})),
            Filter::Raw(json!({"equals": {"key": "a"}})),
            Filter::Raw(json!({"equals": {"key": "a", "value": 1}, "in": {}})),
            Filter::Raw(json!({"andAll": {"key": "a"}})),
        ];
        for filter in bad {
            let err = to_kb_filter(&filter).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidInput {
                        field: "filter",
                        ..
                    }
                ),
                "{filter:?}: {err}"
            );
        }
    }

    #[test]
    fn raw_filters_pass_through() {
        let raw = json!({"andAll": [
            {"greaterThan": {"key": "year", "value": 2020}},
            {"startsWith": {"key": "path", "value": "docs/"}}
        ]});
        let RetrievalFilter::AndAll(parts) = to_kb_filter(&Filter::Raw(raw)).unwrap() else {
            panic!("not andAll")
        };
        assert!(matches!(&parts[0], RetrievalFilter::GreaterThan(a) if a.key == "year"));
        assert!(matches!(&parts[1], RetrievalFilter::StartsWith(a) if a.key == "path"));
    }
}
