//! [`TantivyRetrieverBuilder`]: where the index lives and how large its passages are.

use std::path::PathBuf;
use std::sync::Mutex;

use rag_core::{Error, Result};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, ReloadPolicy};

use super::{Fields, TantivyRetriever};

/// Configures a [`TantivyRetriever`]; [`TantivyRetrieverBuilder::build`] opens it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct TantivyRetrieverBuilder {
    dir: Option<PathBuf>,
    max_passage_tokens: usize,
}

impl Default for TantivyRetrieverBuilder {
    fn default() -> Self {
        TantivyRetrieverBuilder {
            dir: None,
            max_passage_tokens: TantivyRetriever::DEFAULT_MAX_PASSAGE_TOKENS,
        }
    }
}

impl TantivyRetriever {
    /// The default passage size, in estimated tokens.
    pub const DEFAULT_MAX_PASSAGE_TOKENS: usize = 200;
    /// The smallest passage size accepted.
    pub const MIN_PASSAGE_TOKENS: usize = 16;
}

impl TantivyRetrieverBuilder {
    /// Keeps the index in `dir` (created when missing; an index already there is opened).
    /// Without it the index is in RAM.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The longest passage cut from a file, in tokens estimated by
    /// [`crate::estimate_tokens`] (default 200, at least 16).
    pub fn with_max_passage_tokens(mut self, n: usize) -> Self {
        self.max_passage_tokens = n;
        self
    }

    /// Opens or creates the index. [`Error::Config`] when the passage size is below
    /// [`TantivyRetriever::MIN_PASSAGE_TOKENS`], when the folder cannot be created or opened,
    /// or when it holds an index of another shape.
    pub fn build(self) -> Result<TantivyRetriever> {
        if self.max_passage_tokens < TantivyRetriever::MIN_PASSAGE_TOKENS {
            return Err(Error::config(format!(
                "TantivyRetriever: max_passage_tokens is {}, the least is {}",
                self.max_passage_tokens,
                TantivyRetriever::MIN_PASSAGE_TOKENS
            )));
        }
        let (schema, fields) = Fields::schema();
        let index = match &self.dir {
            None => Index::create_in_ram(schema),
            Some(dir) => {
                let fail = |what: &str, e: &dyn std::fmt::Display| {
                    Error::config(format!(
                        "TantivyRetriever: cannot {what} {}: {e}",
                        dir.display()
                    ))
                };
                std::fs::create_dir_all(dir).map_err(|e| fail("create the folder", &e))?;
                let folder = MmapDirectory::open(dir).map_err(|e| fail("open the folder", &e))?;
                Index::open_or_create(folder, schema).map_err(|e| fail("open the index in", &e))?
            }
        };
        super::analyzer::register(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| Error::config(format!("TantivyRetriever: cannot open a reader: {e}")))?;
        Ok(TantivyRetriever {
            index,
            reader,
            fields,
            max_passage_tokens: self.max_passage_tokens,
            writing: Mutex::new(()),
            dir: self.dir,
        })
    }
}
