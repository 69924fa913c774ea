//! [`KendraRetriever`] and its builder.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use aws_sdk_kendra::config::retry::RetryConfig;
use aws_sdk_kendra::types::{AttributeFilter as SdkFilter, UserContext as SdkUserContext};
use aws_sdk_kendra::Client;
use rag_core::{
    Error, Passage, Result, RetrievalRequest, Retrieved, Retriever, UserContext, Warning,
};

use crate::error::{from_sdk, Api};
use crate::filter::{self, AttributeFilter};
use crate::mapping::{self, Confidence, Mapped};
use crate::query::{self, MAX_QUERY_CHARS};

/// Kendra's largest page (`PageSize`) for Retrieve and Query.
pub const MAX_PAGE_SIZE: usize = 100;

/// The most pages one retrieval reads. Kendra returns at most 100 results per query by
/// default, so no index needs more pages than this even one result at a time; the bound ends
/// paging against a service that never sends a short page (results without ids get a new
/// fallback id on every page, so a repeating page would otherwise look new each time).
const MAX_PAGES: usize = 100;

/// Which Kendra API serves the passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KendraApi {
    /// `Retrieve`: semantic passages of up to about 200 token words, made for RAG (the default).
    #[default]
    Retrieve,
    /// `Query`: document excerpts, plus the answer text of `ANSWER` and `QUESTION_ANSWER`
    /// (FAQ) results.
    Query,
}

/// A [`Retriever`] over an Amazon Kendra index.
///
/// Each request sends the query (cleaned and shortened to Kendra's limit, with a
/// [`Warning::QueryTruncated`] when shortened), the combined attribute filter (the retriever's
/// default filter, its `_language_code` filter and the request's [`rag_core::Filter`], joined
/// by `AndAllFilters`) and the request's [`UserContext`], so Kendra only returns passages from
/// documents the user may read. `top_k` above Kendra's page size of 100 is served by further
/// pages.
#[derive(Clone)]
pub struct KendraRetriever {
    client: Client,
    index_id: String,
    api: KendraApi,
    query_fallback: bool,
    default_filter: Option<SdkFilter>,
    language_code: Option<String>,
    min_confidence: Option<Confidence>,
    max_query_chars: usize,
    require_user: bool,
}

impl fmt::Debug for KendraRetriever {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KendraRetriever")
            .field("index_id", &self.index_id)
            .field("api", &self.api)
            .field("query_fallback", &self.query_fallback)
            .field("default_filter", &self.default_filter.is_some())
            .field("language_code", &self.language_code)
            .field("min_confidence", &self.min_confidence)
            .field("max_query_chars", &self.max_query_chars)
            .field("require_user", &self.require_user)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KendraRetriever`]; mistakes fail at [`KendraRetrieverBuilder::build`].
#[derive(Debug, Default)]
#[must_use]
pub struct KendraRetrieverBuilder {
    client: Option<Client>,
    index_id: Option<String>,
    api: KendraApi,
    query_fallback: bool,
    default_filter: Option<AttributeFilter>,
    language_code: Option<String>,
    min_confidence: Option<Confidence>,
    max_query_chars: Option<usize>,
    require_user: bool,
    retry: Option<RetryConfig>,
}

impl From<Client> for KendraRetrieverBuilder {
    fn from(client: Client) -> Self {
        KendraRetrieverBuilder::default().with_client(client)
    }
}

impl KendraRetriever {
    /// A builder.
    pub fn builder() -> KendraRetrieverBuilder {
        KendraRetrieverBuilder::default()
    }

    /// A retriever on `index_id` with a client from the AWS environment (region, credentials,
    /// retry settings) and the defaults.
    pub async fn from_env(index_id: impl Into<String>) -> Result<Self> {
        Self::builder()
            .with_index_id(index_id)
            .build_from_env()
            .await
    }

    /// The index id.
    pub fn index_id(&self) -> &str {
        &self.index_id
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl KendraRetrieverBuilder {
    /// The SDK client to call Kendra with (for example one pointed at a test endpoint).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// A client made from a loaded AWS configuration.
    pub fn with_sdk_config(self, config: &aws_config::SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// The Kendra index id (required).
    pub fn with_index_id(mut self, index_id: impl Into<String>) -> Self {
        self.index_id = Some(index_id.into());
        self
    }

    /// Which API serves the passages ([`KendraApi::Retrieve`] by default).
    pub fn with_api(mut self, api: KendraApi) -> Self {
        self.api = api;
        self
    }

    /// When the Retrieve API returns no passage, ask the Query API too (off by default: it
    /// costs a second call, and its excerpts are shorter).
    pub fn with_query_fallback(mut self, fallback: bool) -> Self {
        self.query_fallback = fallback;
        self
    }

    /// A filter applied to every request, joined to the request's own filter by
    /// `AndAllFilters`.
    pub fn with_filter(mut self, filter: AttributeFilter) -> Self {
        self.default_filter = Some(filter);
        self
    }

    /// Only documents in this language (`_language_code`, for example `en`).
    pub fn with_language_code(mut self, code: impl Into<String>) -> Self {
        self.language_code = Some(code.into());
        self
    }

    /// Drops results whose confidence bucket is below `min`. Results without a bucket (Kendra
    /// has buckets for English only) are kept.
    pub fn with_min_confidence(mut self, min: Confidence) -> Self {
        self.min_confidence = Some(min);
        self
    }

    /// The longest query text sent, in characters ([`MAX_QUERY_CHARS`] by default, Kendra's
    /// limit; lower it, or raise it if your quota was raised).
    pub fn with_max_query_chars(mut self, chars: usize) -> Self {
        self.max_query_chars = Some(chars);
        self
    }

    /// Reject requests that carry no [`UserContext`], for indexes whose documents all need
    /// access control (off by default).
    pub fn with_user_context_required(mut self, required: bool) -> Self {
        self.require_user = required;
        self
    }

    /// The SDK retry settings for this retriever's calls (throttling, 5xx and transport
    /// errors are retried with backoff); the client's own settings when not set.
    pub fn with_retry_config(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Checks the configuration and builds the retriever.
    ///
    /// Fails with [`Error::Config`] without a client or an index id, with an index id that is
    /// not Kendra's 36-character form, an empty language code, a query limit of 0, or a default
    /// filter Kendra would reject.
    pub fn build(self) -> Result<KendraRetriever> {
        let client = self.client.clone().ok_or_else(|| {
            Error::config(
                "KendraRetriever needs a client: use with_client, with_sdk_config or build_from_env",
            )
        })?;
        self.finish(client)
    }

    /// Like [`KendraRetrieverBuilder::build`], loading a client from the AWS environment when
    /// none was given.
    pub async fn build_from_env(self) -> Result<KendraRetriever> {
        let client = match self.client.clone() {
            Some(client) => client,
            None => Client::new(&aws_config::load_from_env().await),
        };
        self.finish(client)
    }

    fn finish(self, client: Client) -> Result<KendraRetriever> {
        let index_id = self
            .index_id
            .ok_or_else(|| Error::config("KendraRetriever needs an index id (with_index_id)"))?;
        check_index_id(&index_id)?;
        let language_code = match self.language_code {
            Some(code) => {
                let code = code.trim().to_owned();
                if code.is_empty()
                    || !code
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(Error::config(format!(
                        "language code `{code}` is not a language code such as `en` or `pt-BR`"
                    )));
                }
                Some(code)
            }
            None => None,
        };
        let max_query_chars = self.max_query_chars.unwrap_or(MAX_QUERY_CHARS);
        if max_query_chars == 0 {
            return Err(Error::config("the query length limit must be at least 1"));
        }
        let default_filter = self.default_filter.map(AttributeFilter::into_sdk);
        if let Some(f) = &default_filter {
            filter::validate(f).map_err(|e| Error::config(format!("default filter: {e}")))?;
        }
        // The retry settings go into the client once, not into every call.
        let client = match self.retry {
            Some(retry) => {
                Client::from_conf(client.config().to_builder().retry_config(retry).build())
            }
            None => client,
        };
        Ok(KendraRetriever {
            client,
            index_id,
            api: self.api,
            query_fallback: self.query_fallback,
            default_filter,
            language_code,
            min_confidence: self.min_confidence,
            max_query_chars,
            require_user: self.require_user,
        })
    }
}

fn check_index_id(id: &str) -> Result<()> {
    // Kendra index ids are 36 characters matching [a-zA-Z0-9][a-zA-Z0-9-]*.
    let well_formed = id.len() == 36
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if well_formed {
        Ok(())
    } else {
        Err(Error::config(format!(
            "`{id}` is not a Kendra index id (36 letters, digits and dashes)"
        )))
    }
}

/// Kendra's user context from the core one: a token, or a user id with groups.
fn user_context(user: &UserContext) -> Result<SdkUserContext> {
    let bad = |m: &str| Error::invalid_input("user", m.to_owned());
    let has_identity = user.user_id.is_some() || !user.groups.is_empty();
    match &user.token {
        Some(_) if has_identity => Err(bad(
            "give Kendra either a token or a user id with groups, not both",
        )),
        Some(token) if token.trim().is_empty() => Err(bad("the user token is empty")),
        Some(token) => Ok(SdkUserContext::builder().token(token).build()),
        None if !has_identity => Err(bad(
            "the user context is empty: without a token, user id or groups Kendra would not \
             filter by access",
        )),
        None => {
            if user.user_id.as_deref().is_some_and(|u| u.trim().is_empty()) {
                return Err(bad("the user id is empty"));
            }
            if user.groups.iter().any(|g| g.trim().is_empty()) {
                return Err(bad("a group name is empty"));
            }
            Ok(SdkUserContext::builder()
                .set_user_id(user.user_id.clone())
                .set_groups((!user.groups.is_empty()).then(|| user.groups.clone()))
                .build())
        }
    }
}

/// One request, checked and translated.
struct Plan {
    query: String,
    top_k: usize,
    filter: Option<SdkFilter>,
    user: Option<SdkUserContext>,
}

impl KendraRetriever {
    fn plan(&self, req: &RetrievalRequest) -> Result<(Plan, Vec<Warning>)> {
        if req.top_k == 0 {
            return Err(Error::invalid_input("top_k", "must be at least 1"));
        }
        let prepared = query::prepare(&req.query, self.max_query_chars)
            .ok_or_else(|| Error::invalid_input("query", "the query has no searchable text"))?;
        let user = match &req.user {
            Some(user) => Some(user_context(user)?),
            None if self.require_user => {
                return Err(Error::invalid_input(
                    "user",
                    format!(
                        "Kendra index `{}` is configured to require a user context",
                        self.index_id
                    ),
                ))
            }
            None => None,
        };
        let mut parts = Vec::new();
        parts.extend(self.default_filter.clone());
        if let Some(code) = &self.language_code {
            parts.push(AttributeFilter::language(code.clone()).into_sdk());
        }
        if let Some(f) = &req.filter {
            parts.push(filter::translate(f)?);
        }
        let filter = filter::combine(parts);
        if let Some(f) = &filter {
            filter::validate(f)?;
        }
        let mut warnings = Vec::new();
        if let Some((original_chars, sent_chars)) = prepared.truncated {
            warnings.push(Warning::QueryTruncated {
                original_chars,
                sent_chars,
            });
        }
        let plan = Plan {
            query: prepared.text,
            top_k: req.top_k,
            filter,
            user,
        };
        Ok((plan, warnings))
    }

    fn keep(&self, confidence: Option<Confidence>) -> bool {
        match (self.min_confidence, confidence) {
            (Some(min), Some(c)) => c >= min,
            _ => true,
        }
    }

    /// Reads pages until `top_k` passages are kept or Kendra has no more.
    async fn paged<F, Fut>(&self, top_k: usize, mut page: F) -> Result<Vec<Passage>>
    where
        F: FnMut(i32, i32) -> Fut,
        Fut: Future<Output = Result<(usize, Vec<Mapped>)>>,
    {
        let page_size = top_k.clamp(1, MAX_PAGE_SIZE);
        let mut passages = Vec::new();
        let mut seen = HashSet::new();
        let mut number = 1usize;
        loop {
            let (returned, mapped) = page(number as i32, page_size as i32).await?;
            let mut fresh = 0;
            for m in mapped {
                if seen.insert(m.passage.id.clone()) {
                    fresh += 1;
                    if self.keep(m.confidence) {
                        passages.push(m.passage);
                    }
                }
            }
            // A short page is the last one; a page with nothing new (the service repeating
            // itself) ends paging too, and so does the page bound, so paging always ends.
            let done = passages.len() >= top_k || returned < page_size || fresh == 0;
            if done || number >= MAX_PAGES {
                break;
            }
            number += 1;
        }
        passages.truncate(top_k);
        Ok(passages)
    }

    async fn via_retrieve(&self, plan: &Plan) -> Result<Vec<Passage>> {
        self.paged(plan.top_k, |number, size| async move {
            let call = self
                .client
                .retrieve()
                .index_id(&self.index_id)
                .query_text(&plan.query)
                .page_number(number)
                .page_size(size)
                .set_attribute_filter(plan.filter.clone())
                .set_user_context(plan.user.clone());
            let sent = call.send().await;
            let out = sent.map_err(|e| from_sdk(e, Api::Retrieve, &self.index_id))?;
            let items = out.result_items();
            let mapped = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| mapping::from_retrieve(item, format!("p{number}-{i}")))
                .collect();
            Ok((items.len(), mapped))
        })
        .await
    }

    async fn via_query(&self, plan: &Plan) -> Result<Vec<Passage>> {
        self.paged(plan.top_k, |number, size| async move {
            let call = self
                .client
                .query()
                .index_id(&self.index_id)
                .query_text(&plan.query)
                .page_number(number)
                .page_size(size)
                .set_attribute_filter(plan.filter.clone())
                .set_user_context(plan.user.clone());
            let sent = call.send().await;
            let out = sent.map_err(|e| from_sdk(e, Api::Query, &self.index_id))?;
            let items = out.result_items();
            let mapped = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| mapping::from_query(item, format!("p{number}-{i}")))
                .collect();
            Ok((items.len(), mapped))
        })
        .await
    }
}

#[async_trait]
impl Retriever for KendraRetriever {
    async fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>> {
        let retrieved = self.retrieve_with_warnings(req).await?;
        for warning in &retrieved.warnings {
            tracing::warn!(index_id = %self.index_id, "{warning}");
        }
        Ok(retrieved.passages)
    }

    async fn retrieve_with_warnings(&self, req: &RetrievalRequest) -> Result<Retrieved> {
        let (plan, warnings) = self.plan(req)?;
        let passages = match self.api {
            KendraApi::Query => self.via_query(&plan).await?,
            KendraApi::Retrieve => {
                let passages = self.via_retrieve(&plan).await?;
                if passages.is_empty() && self.query_fallback {
                    tracing::debug!(index_id = %self.index_id, "Retrieve found nothing; asking Query");
                    self.via_query(&plan).await?
                } else {
                    passages
                }
            }
        };
        Ok(Retrieved { passages, warnings })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kendra::config::{BehaviorVersion, Region};
    use rag_core::Filter;
    use serde_json::json;

    use super::*;

    const INDEX: &str = "0123abcd-4567-89ab-cdef-0123456789ab";

    fn client() -> Client {
        // Never called: these tests stop before any request.
        Client::from_conf(
            aws_sdk_kendra::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .build(),
        )
    }

    fn retriever() -> KendraRetrieverBuilder {
        KendraRetriever::builder()
            .with_client(client())
            .with_index_id(INDEX)
    }

    #[test]
    fn build_checks_the_configuration() {
        let no_client = KendraRetriever::builder().with_index_id(INDEX).build();
        assert!(matches!(no_client, Err(Error::Config { .. })));
        assert!(KendraRetrieverBuilder::from(client()).build().is_err());
        for bad in [
            "",
            "idx",
            "0123abcd-4567-89ab-cdef-0123456789a_",
            "-123abcd-4567-89ab-cdef-0123456789ab",
        ] {
            let err = retriever().with_index_id(bad).build().unwrap_err();
            assert!(err.to_string().contains("index id"), "{bad}: {err}");
        }
        assert!(retriever().with_language_code(" ").build().is_err());
        assert!(retriever().with_language_code("en\"}").build().is_err());
        assert!(retriever().with_max_query_chars(0).build().is_err());
        let too_deep = AttributeFilter::all([AttributeFilter::any([AttributeFilter::not(
            AttributeFilter::equals("a", "b"),
        )])]);
        assert!(matches!(
            retriever().with_filter(too_deep).build(),
            Err(Error::Config { .. })
        ));
        assert_eq!(retriever().build().unwrap().index_id(), INDEX);
    }

    #[test]
    fn user_context_is_a_token_or_an_identity() {
        let token = UserContext {
            token: Some("jwt".into()),
            ..UserContext::default()
        };
        assert_eq!(user_context(&token).unwrap().token(), Some("jwt"));
        let identity = UserContext {
            user_id: Some("alice".into()),
            groups: vec!["eng".into()],
            ..UserContext::default()
        };
        let sdk = user_context(&identity).unwrap();
        assert_eq!(sdk.user_id(), Some("alice"));
        assert_eq!(sdk.groups(), ["eng".to_owned()]);
        let both = UserContext {
            token: Some("jwt".into()),
            user_id: Some("alice".into()),
            groups: vec![],
        };
        for bad in [both, UserContext::default()] {
            let err = user_context(&bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { field: "user", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn plan_combines_filters_and_rejects_bad_requests() {
        let r = retriever()
            .with_language_code("en")
            .with_filter(AttributeFilter::equals("_category", "guide"))
            .build()
            .unwrap();
        let mut req = RetrievalRequest::new("how to scale", 5);
        req.filter = Some(Filter::And(vec![
            Filter::Equals {
                key: "team".into(),
                value: json!("infra"),
            },
            Filter::Or(vec![
                Filter::Equals {
                    key: "y".into(),
                    value: json!(1),
                },
                Filter::Equals {
                    key: "y".into(),
                    value: json!(2),
                },
            ]),
        ]));
        let (plan, warnings) = r.plan(&req).unwrap();
        assert!(warnings.is_empty());
        let f = plan.filter.unwrap();
        assert_eq!(f.and_all_filters.as_ref().map(Vec::len), Some(4));
        assert!(filter::validate(&f).is_ok());

        assert!(matches!(
            r.plan(&RetrievalRequest::new("q", 0)),
            Err(Error::InvalidInput { field: "top_k", .. })
        ));
        assert!(matches!(
            r.plan(&RetrievalRequest::new(" \n ", 3)),
            Err(Error::InvalidInput { field: "query", .. })
        ));
        let required = retriever()
            .with_user_context_required(true)
            .build()
            .unwrap();
        assert!(matches!(
            required.plan(&RetrievalRequest::new("q", 3)),
            Err(Error::InvalidInput { field: "user", .. })
        ));
        let mut raw = RetrievalRequest::new("q", 3);
        raw.filter = Some(Filter::Raw(json!({"Nope": 1})));
        assert!(matches!(
            r.plan(&raw),
            Err(Error::InvalidInput {
                field: "filter",
                ..
            })
        ));
    }
}
