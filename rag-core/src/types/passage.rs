use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::Warning;

/// A piece of a document that a retriever found for a question.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Passage {
    /// The retriever's id for this passage (unique within one retrieval).
    pub id: String,
    /// The passage text that goes into the prompt.
    pub text: String,
    /// The title of the document it comes from.
    pub title: Option<String>,
    /// Where the document lives (URL, S3 URI, file path).
    pub uri: Option<String>,
    /// The retriever's relevance score; higher is better, scale is the retriever's own.
    pub score: Option<f32>,
    /// Other document attributes the retriever returned.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl Passage {
    /// A passage with an id and text and nothing else.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Passage {
            id: id.into(),
            text: text.into(),
            ..Passage::default()
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the uri.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Sets the score.
    pub fn with_score(mut self, score: f32) -> Self {
        self.score = Some(score);
        self
    }
}

/// A passage as the answer cites it: `[index]` in the prompt and in the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The passage's number in the prompt, from 1.
    pub index: usize,
    /// The passage id.
    pub passage_id: String,
    /// The document title.
    pub title: Option<String>,
    /// The document location.
    pub uri: Option<String>,
    /// The retriever's score.
    pub score: Option<f32>,
}

impl Citation {
    /// The citation of `passage` shown as number `index`.
    pub fn new(index: usize, passage: &Passage) -> Self {
        Citation {
            index,
            passage_id: passage.id.clone(),
            title: passage.title.clone(),
            uri: passage.uri.clone(),
            score: passage.score,
        }
    }
}

/// Who is asking, for retrievers that enforce document-level access control.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserContext {
    /// An identity token (for example a JWT) that the retriever verifies.
    pub token: Option<String>,
    /// The user id.
    pub user_id: Option<String>,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
}

/// A backend-independent document filter; each retriever translates it to its own form.
///
/// A retriever that cannot apply a filter must fail with [`crate::Error::InvalidInput`] rather
/// than ignore it: filters often carry access rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Filter {
    /// The attribute equals the value.
    Equals {
        /// Attribute name.
        key: String,
        /// Value to match.
        value: serde_json::Value,
    },
    /// The attribute equals one of the values.
    In {
        /// Attribute name.
        key: String,
        /// Values to match.
        values: Vec<serde_json::Value>,
    },
    /// All of the filters hold.
    And(Vec<Filter>),
    /// At least one of the filters holds.
    Or(Vec<Filter>),
    /// The filter does not hold.
    Not(Box<Filter>),
    /// A filter in the backend's own JSON form, passed through unchanged.
    Raw(serde_json::Value),
}

/// What a [`crate::Retriever`] is asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalRequest {
    /// The search query (the question, or a rewrite of it).
    pub query: String,
    /// How many passages at most.
    pub top_k: usize,
    /// An optional document filter.
    pub filter: Option<Filter>,
    /// The asking user, for access control.
    pub user: Option<UserContext>,
}

impl RetrievalRequest {
    /// A request for `top_k` passages for `query`.
    pub fn new(query: impl Into<String>, top_k: usize) -> Self {
        RetrievalRequest {
            query: query.into(),
            top_k,
            filter: None,
            user: None,
        }
    }
}

/// Passages plus anything the retriever wants the caller to know (for example that the query
/// was shortened to the service's limit).
#[derive(Debug, Clone, Default)]
pub struct Retrieved {
    /// The passages, best first.
    pub passages: Vec<Passage>,
    /// Non-fatal remarks, forwarded to the caller as [`crate::Event::Warning`]s.
    pub warnings: Vec<Warning>,
}

impl From<Vec<Passage>> for Retrieved {
    fn from(passages: Vec<Passage>) -> Self {
        Retrieved {
            passages,
            warnings: Vec::new(),
        }
    }
}
