//! The documents the examples index by default: this project's own documentation.

// Shared by several examples; each uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rag::memory::TantivyRetriever;

/// The workspace root (where the examples are built from).
pub(crate) fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Indexes the workspace's README files and its `docs/` folder, or the folders in `dirs`
/// when there are any. Returns the files and passages indexed.
pub(crate) fn index_docs(
    index: &TantivyRetriever,
    dirs: &[PathBuf],
) -> Result<(usize, usize), String> {
    let (mut files, mut passages) = (0, 0);
    let mut add = |added: rag::memory::Added| {
        files += added.files;
        passages += added.passages;
    };
    if dirs.is_empty() {
        let root = project_root();
        let readmes = std::iter::once(root.join("README.md")).chain(
            [
                "rag-core",
                "rag-memory",
                "rag-bedrock",
                "rag-kendra",
                "rag-dynamodb",
                "rag-openai",
                "rag-app",
            ]
            .iter()
            .map(|krate| root.join(krate).join("README.md")),
        );
        for file in readmes.filter(|f| f.is_file()) {
            add(index
                .add_file(&file)
                .map_err(|e| format!("cannot index {}: {e}", file.display()))?);
        }
        let docs = root.join("docs");
        if docs.is_dir() {
            add(index
                .add_dir(&docs)
                .map_err(|e| format!("cannot index {}: {e}", docs.display()))?);
        }
    } else {
        for dir in dirs {
            add(index
                .add_dir(dir)
                .map_err(|e| format!("cannot index {}: {e}", dir.display()))?);
        }
    }
    if passages == 0 {
        return Err(
            "no passages were indexed: the folders hold no .md, .markdown or .txt file with text"
                .into(),
        );
    }
    Ok((files, passages))
}

/// A path under the workspace, shown relative to it.
pub(crate) fn shorten(uri: &str) -> String {
    Path::new(uri)
        .strip_prefix(project_root())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| uri.to_string())
}
