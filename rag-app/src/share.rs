//! Sharing and forking: the canonical JSON of an app, its digest, and forks that record
//! where they come from.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::doc::{AppDoc, Provenance};
use crate::load::Problems;
use crate::plan::Plan;

/// An object's keys in order, recursively (what the digest hashes does not depend on the
/// order a file wrote them in, nor on serde_json's map features).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

impl AppDoc {
    /// Reads an app from JSON and checks it: every problem in the error at once. Loading runs
    /// nothing, so an app from anyone is safe to open.
    pub fn from_json(json: &str) -> Result<AppDoc, Problems> {
        Plan::from_json(json).map(|plan| plan.doc().clone())
    }

    /// Its JSON, indented, for saving; [`AppDoc::from_json`] reads it back to an equal app.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("an app serializes")
    }

    /// Its canonical JSON: no layout (display only), keys sorted at every level, no
    /// whitespace. Two files that differ only in key order, whitespace or layout have the
    /// same canonical JSON.
    pub fn canonical_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("an app serializes");
        if let Value::Object(map) = &mut value {
            map.remove("layout");
        }
        serde_json::to_string(&sorted(value)).expect("a value serializes")
    }

    /// The digest of its canonical JSON: `sha256:` and 64 hex digits. What a share link
    /// names, and what a fork records of its original.
    pub fn digest(&self) -> String {
        sha256(self.canonical_json().as_bytes())
    }

    /// A copy to edit as one's own: a new id, and [`AppDoc::forked_from`] naming this app's id
    /// and digest. Nodes, inputs and layout are kept.
    pub fn fork(&self) -> AppDoc {
        AppDoc {
            id: format!("app-{}", uuid::Uuid::now_v7().simple()),
            forked_from: Some(Provenance {
                id: self.id.clone(),
                digest: self.digest(),
            }),
            ..self.clone()
        }
    }
}
