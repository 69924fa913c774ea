//! Adding files, folders and passages to a [`TantivyRetriever`].

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use rag_core::{Error, Passage, Result};
use tantivy::{IndexWriter, TantivyDocument, Term};

use super::chunk::{cut_markdown, cut_plain};
use super::{index_error, TantivyRetriever};

/// Memory for one add's in-progress segment (tantivy's least is 15 MB).
const WRITER_MEMORY: usize = 32_000_000;

/// What an add call put into the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Added {
    /// Files read.
    pub files: usize,
    /// Passages indexed.
    pub passages: usize,
}

/// How a file's text is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Markdown,
    Text,
}

impl Kind {
    fn of(path: &Path) -> Option<Kind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Some(Kind::Markdown),
            "txt" => Some(Kind::Text),
            _ => None,
        }
    }
}

impl TantivyRetriever {
    /// Indexes one `.md`, `.markdown` or `.txt` file, replacing the passages it had if it was
    /// indexed before (by its path). The path as given is the passages' `uri`.
    pub fn add_file(&self, path: impl AsRef<Path>) -> Result<Added> {
        let path = path.as_ref();
        let kind = Kind::of(path).ok_or_else(|| {
            Error::invalid_input(
                "path",
                format!("{} is not a .md, .markdown or .txt file", path.display()),
            )
        })?;
        let passages = self.read_file(path, kind)?;
        self.write_files(vec![(path.to_path_buf(), passages)])
    }

    /// Indexes every `.md`, `.markdown` and `.txt` file under `dir` (recursively, in path
    /// order, skipping hidden files and folders and not following linked folders), in one
    /// commit: on an error nothing is added.
    pub fn add_dir(&self, dir: impl AsRef<Path>) -> Result<Added> {
        let dir = dir.as_ref();
        let mut paths = Vec::new();
        collect_files(dir, &mut paths)?;
        paths.sort();
        let files = paths
            .into_iter()
            .filter_map(|p| Kind::of(&p).map(|k| (p, k)))
            .map(|(p, k)| self.read_file(&p, k).map(|passages| (p, passages)))
            .collect::<Result<Vec<_>>>()?;
        self.write_files(files)
    }

    /// Indexes passages as they are (a passage whose id is indexed already replaces it), in
    /// one commit. Passages with empty text are skipped; an empty id is an
    /// [`Error::InvalidInput`] and nothing is added. A `headings` attribute holding a list of
    /// strings is searched like a file's heading path.
    pub fn add_passages(&self, passages: impl IntoIterator<Item = Passage>) -> Result<Added> {
        self.write(|writer| {
            let mut added = Added::default();
            for passage in passages {
                if passage.id.is_empty() {
                    return Err(Error::invalid_input("passage.id", "is empty"));
                }
                if passage.text.trim().is_empty() {
                    continue;
                }
                writer.delete_term(Term::from_field_text(self.fields.id, &passage.id));
                writer
                    .add_document(self.document(&passage))
                    .map_err(index_error("add a passage"))?;
                added.passages += 1;
            }
            Ok(added)
        })
    }

    /// Indexes a JSON Lines file of passages, one object a line with `id` and `text` and
    /// optionally `title`, `uri` and `attributes` (other keys are ignored), like
    /// [`TantivyRetriever::add_passages`]. A line that is not such an object is an
    /// [`Error::InvalidInput`] naming its line, and nothing is added.
    pub fn add_jsonl(&self, path: impl AsRef<Path>) -> Result<Added> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let passages = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                parse_passage(line).map_err(|e| {
                    Error::invalid_input("jsonl", format!("{} line {}: {e}", path.display(), i + 1))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut added = self.add_passages(passages)?;
        added.files = 1;
        Ok(added)
    }

    /// Reads and cuts one file into passages.
    fn read_file(&self, path: &Path, kind: Kind) -> Result<Vec<Passage>> {
        let text = read_text(path)?;
        let uri = path.to_string_lossy().into_owned();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| uri.clone());
        let (title, pieces) = match kind {
            Kind::Markdown => {
                let cut = cut_markdown(&text, self.max_passage_tokens);
                (cut.title.unwrap_or(stem), cut.pieces)
            }
            Kind::Text => (stem, cut_plain(&text, self.max_passage_tokens)),
        };
        Ok(pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut passage = Passage::new(format!("{uri}#{i}"), piece.text)
                    .with_title(title.clone())
                    .with_uri(uri.clone());
                passage
                    .attributes
                    .insert("headings".to_string(), piece.headings.into());
                passage
            })
            .collect())
    }

    /// Replaces the passages of each file with the given ones, in one commit.
    fn write_files(&self, files: Vec<(PathBuf, Vec<Passage>)>) -> Result<Added> {
        self.write(|writer| {
            let mut added = Added::default();
            for (path, passages) in files {
                let uri = path.to_string_lossy();
                writer.delete_term(Term::from_field_text(self.fields.uri, &uri));
                for passage in &passages {
                    writer
                        .add_document(self.document(passage))
                        .map_err(index_error("add a passage"))?;
                }
                added.files += 1;
                added.passages += passages.len();
            }
            Ok(added)
        })
    }

    /// Runs `ops` with a writer and commits; on an error nothing is committed.
    fn write(&self, ops: impl FnOnce(&mut IndexWriter) -> Result<Added>) -> Result<Added> {
        let _one_writer = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut writer: IndexWriter = self
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(index_error("open a writer"))?;
        let added = ops(&mut writer)?;
        writer.commit().map_err(index_error("commit"))?;
        writer
            .wait_merging_threads()
            .map_err(index_error("finish merging"))?;
        self.reader.reload().map_err(index_error("reload"))?;
        Ok(added)
    }

    fn document(&self, passage: &Passage) -> TantivyDocument {
        let f = self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &passage.id);
        doc.add_text(f.text, &passage.text);
        if let Some(title) = &passage.title {
            doc.add_text(f.title, title);
        }
        if let Some(uri) = &passage.uri {
            doc.add_text(f.uri, uri);
        }
        if let Some(serde_json::Value::Array(headings)) = passage.attributes.get("headings") {
            let path: Vec<&str> = headings.iter().filter_map(|h| h.as_str()).collect();
            doc.add_text(f.headings, path.join("\n"));
        }
        for term in super::filter::terms(passage) {
            doc.add_text(f.filter_terms, term);
        }
        if !passage.attributes.is_empty() {
            let json = serde_json::to_string(&passage.attributes)
                .expect("a map of JSON values always serializes");
            doc.add_text(f.attributes, json);
        }
        doc
    }
}

/// A file's text; invalid UTF-8 is replaced rather than refused.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::invalid_input("path", format!("cannot read {}: {e}", path.display()))
    })?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// The files under `dir`, recursively, without hidden entries or linked folders.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let unreadable = |e: std::io::Error| {
        Error::invalid_input("path", format!("cannot list {}: {e}", dir.display()))
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(unreadable)?;
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

/// One JSON Lines object as a passage (`attributes` may be missing).
fn parse_passage(line: &str) -> std::result::Result<Passage, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_str(line)?;
    if let Some(object) = value.as_object_mut() {
        object
            .entry("attributes")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    serde_json::from_value(value)
}
