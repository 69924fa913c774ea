//! [`TantivyRetriever`]: a local full-text [`Retriever`] on tantivy (BM25), in RAM or in a
//! folder.

mod add;
mod analyzer;
mod builder;
pub(crate) mod chunk;
mod filter;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use rag_core::{Error, Filter, Passage, Result, RetrievalRequest, Retrieved, Retriever, Warning};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{Index, IndexReader, TantivyDocument, Term};

pub use add::Added;
pub use builder::TantivyRetrieverBuilder;

/// How much a match in the document title counts against one in the passage text.
const TITLE_BOOST: f32 = 2.0;
/// How much a match in the passage's heading path counts against one in its text.
const HEADINGS_BOOST: f32 = 1.5;

/// A local full-text index of passages, searched with BM25: the embedded [`Retriever`].
///
/// Fill it from a folder of Markdown and text files ([`TantivyRetriever::add_dir`],
/// [`TantivyRetriever::add_file`]): each file is cut into passages of about 200 tokens along
/// its headings and paragraphs; a passage carries the file's title (its first `# ` heading,
/// else the file name), the file's path as `uri`, and its heading path as the `headings`
/// attribute. Or index passages you already have ([`TantivyRetriever::add_passages`],
/// [`TantivyRetriever::add_jsonl`]).
///
/// Text is searched by words: split on non-alphanumerics, lowercased, accents folded,
/// English-stemmed. A query is never parsed as query syntax: it is cut into words by the same
/// analyzer as the passages and every word is looked up in the text, title and heading path, so `AND`, `:`,
/// quotes or parentheses in a question are only words or nothing. Scores are tantivy's BM25
/// scores (title matches count double).
///
/// The index lives in RAM ([`TantivyRetriever::in_memory`]) or in a folder
/// ([`TantivyRetriever::open_or_create`]) that a later run opens again. Adding is
/// synchronous, file-reading work: do it at start-up or in `spawn_blocking`. A search runs on
/// the calling task; on a local index it takes well under a millisecond to a few
/// milliseconds. Filters apply to `id`, `uri`, `title` and attributes
/// ([`TantivyRetriever::search_filtered`]); user context is ignored: a local index has no
/// access control.
pub struct TantivyRetriever {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    max_passage_tokens: usize,
    /// One writer at a time: tantivy allows one per index.
    writing: Mutex<()>,
    dir: Option<PathBuf>,
}

/// The schema's fields.
#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    uri: Field,
    title: Field,
    text: Field,
    headings: Field,
    attributes: Field,
    /// Exact `key=value` terms for filters.
    filter_terms: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let searched = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer::NAME)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let mut b = Schema::builder();
        let fields = Fields {
            id: b.add_text_field("id", STRING | STORED),
            uri: b.add_text_field("uri", STRING | STORED),
            title: b.add_text_field("title", searched.clone() | STORED),
            text: b.add_text_field("text", searched.clone() | STORED),
            headings: b.add_text_field("headings", searched),
            attributes: b.add_text_field("attributes", STORED),
            filter_terms: b.add_text_field("filter_terms", STRING),
        };
        (b.build(), fields)
    }
}

impl TantivyRetriever {
    /// The most distinct query words looked up; a longer query is cut, with a warning.
    pub const MAX_QUERY_TERMS: usize = 256;

    /// A builder, to choose a folder and the passage size.
    pub fn builder() -> TantivyRetrieverBuilder {
        TantivyRetrieverBuilder::default()
    }

    /// An empty index in RAM, with passages of about 200 tokens.
    pub fn in_memory() -> Result<Self> {
        Self::builder().build()
    }

    /// The index kept in `dir`: opened when it holds one, created (folder too) when not.
    pub fn open_or_create(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::builder().with_dir(dir).build()
    }

    /// How many passages the index holds.
    pub fn passage_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The folder the index is kept in, if it is not in RAM.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// The longest passage cut from a file, in estimated tokens.
    pub fn max_passage_tokens(&self) -> usize {
        self.max_passage_tokens
    }

    /// The best `top_k` passages for `query`, best first, and a warning when the query was
    /// cut to [`Self::MAX_QUERY_TERMS`] words.
    pub fn search(&self, query: &str, top_k: usize) -> Result<Retrieved> {
        self.search_filtered(query, top_k, None)
    }

    /// Like [`TantivyRetriever::search`], keeping only passages that match `filter`.
    ///
    /// A filter key is `id`, `uri`, `title` or the name of a top-level attribute (such as
    /// `headings`); values are compared exactly (whole numbers as integers, so `2` and `2.0`
    /// are equal), and on a list attribute `Equals` means "one element equals". `Equals`,
    /// `In`, `And`, `Or` and `Not` are supported; [`rag_core::Filter::Raw`], or a value that
    /// is not a string, number or boolean, is an [`Error::InvalidInput`].
    pub fn search_filtered(
        &self,
        query: &str,
        top_k: usize,
        filter: Option<&Filter>,
    ) -> Result<Retrieved> {
        let filter = filter
            .map(|f| filter::query(self.fields.filter_terms, f))
            .transpose()?;
        let (terms, truncated_at) = self.query_terms(query)?;
        let mut retrieved = Retrieved::default();
        if let Some(at) = truncated_at {
            retrieved.warnings.push(Warning::QueryTruncated {
                original_chars: query.chars().count(),
                sent_chars: query[..at].chars().count(),
            });
        }
        let searcher = self.reader.searcher();
        let docs = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        let limit = top_k.min(docs);
        if limit == 0 || terms.is_empty() {
            return Ok(retrieved);
        }
        let f = self.fields;
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .flat_map(|t| {
                [
                    (f.text, 1.0),
                    (f.title, TITLE_BOOST),
                    (f.headings, HEADINGS_BOOST),
                ]
                .map(|(field, boost)| {
                    let q = TermQuery::new(
                        Term::from_field_text(field, t),
                        IndexRecordOption::WithFreqs,
                    );
                    (
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(q), boost)) as Box<dyn Query>,
                    )
                })
            })
            .collect();
        let words: Box<dyn Query> = Box::new(BooleanQuery::new(clauses));
        let query = match filter {
            Some(filter) => BooleanQuery::new(vec![(Occur::Must, words), (Occur::Must, filter)]),
            None => BooleanQuery::new(vec![(Occur::Must, words)]),
        };
        let hits = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(index_error("search"))?;
        for (score, address) in hits {
            let doc: TantivyDocument = searcher.doc(address).map_err(index_error("read"))?;
            retrieved
                .passages
                .push(self.passage(&doc).with_score(score));
        }
        Ok(retrieved)
    }

    /// The distinct analyzed words of `query`, and where the query was cut if it had more
    /// than [`Self::MAX_QUERY_TERMS`].
    fn query_terms(&self, query: &str) -> Result<(Vec<String>, Option<usize>)> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.fields.text)
            .map_err(index_error("analyze the query"))?;
        let mut stream = analyzer.token_stream(query);
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        let mut cut = None;
        while stream.advance() {
            let token = stream.token();
            if seen.contains(&token.text) {
                continue;
            }
            if terms.len() == Self::MAX_QUERY_TERMS {
                cut = Some(token.offset_from);
                break;
            }
            seen.insert(token.text.clone());
            terms.push(token.text.clone());
        }
        Ok((terms, cut))
    }

    fn passage(&self, doc: &TantivyDocument) -> Passage {
        let f = self.fields;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Passage {
            id: text(f.id).unwrap_or_default(),
            text: text(f.text).unwrap_or_default(),
            title: text(f.title),
            uri: text(f.uri),
            score: None,
            attributes: text(f.attributes)
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or_default(),
        }
    }
}

/// Turns a tantivy error during `what` into a retrieval error that keeps it as its source.
fn index_error(what: &'static str) -> impl Fn(tantivy::TantivyError) -> Error {
    move |e| {
        let retryable = matches!(e, tantivy::TantivyError::LockFailure(..));
        Error::retrieval(format!("local index: cannot {what}: {e}"), retryable).with_source(e)
    }
}

impl fmt::Debug for TantivyRetriever {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TantivyRetriever")
            .field("dir", &self.dir)
            .field("passages", &self.passage_count())
            .field("max_passage_tokens", &self.max_passage_tokens)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Retriever for TantivyRetriever {
    async fn retrieve(&self, req: &RetrievalRequest) -> Result<Vec<Passage>> {
        self.retrieve_with_warnings(req).await.map(|r| r.passages)
    }

    async fn retrieve_with_warnings(&self, req: &RetrievalRequest) -> Result<Retrieved> {
        self.search_filtered(&req.query, req.top_k, req.filter.as_ref())
    }
}
