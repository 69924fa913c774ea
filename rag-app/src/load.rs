//! Loading an app from JSON: pure deserialization, every structural problem reported with
//! its JSON path.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::doc::{AppDoc, FormatVersion};

/// One problem of an app, at a JSON path (`$.nodes.summary.params.temperature`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    /// Where it is, as a JSON path from the document's root `$`.
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in an app, sorted by path: the error of loading or planning one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the app has {} problem(s)", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// What loading gave: the document (when it could be read at all), the problems and the
/// warnings (what a newer minor version holds that this version ignored).
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) doc: Option<AppDoc>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
    /// Nodes left out because they could not be read (their references are not reported
    /// again as missing).
    pub(crate) broken: BTreeSet<String>,
}

/// A JSON path segment.
fn push_key(path: &str, key: &str) -> String {
    if !key.is_empty() && key.chars().all(crate::refs::is_id_char) {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_owned()))
    }
}

/// Records the path of every key that appears twice in one object (serde_json keeps one of
/// them silently, and a duplicate node id must not vanish).
struct Duplicates<'a> {
    path: String,
    found: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Duplicates<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Duplicates<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = push_key(&self.path, &key);
            if !seen.insert(key) {
                self.found.borrow_mut().push(path.clone());
            }
            map.next_value_seed(Duplicates {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Duplicates {
                path: format!("{}[{i}]", self.path),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The largest app accepted, in bytes: apps are shared, and one from a stranger must not
/// exhaust memory.
pub const MAX_APP_BYTES: usize = 4 << 20;

/// How many bytes of document the loader may read again in all: each unknown field or
/// unreadable node costs one more reading of the whole document, so a large file full of
/// unknown fields would otherwise take minutes (10,000 readings of 4 MiB).
const READ_BUDGET_BYTES: usize = 64 << 20;

/// Reads `json` as an app. Never runs anything and never panics; what it cannot read is a
/// problem, and it goes on where it can so that one pass reports as much as possible.
pub(crate) fn load(json: &str) -> Loaded {
    let mut out = Loaded {
        doc: None,
        problems: Vec::new(),
        warnings: Vec::new(),
        broken: BTreeSet::new(),
    };
    if json.len() > MAX_APP_BYTES {
        out.problems.push(Problem::new(
            "$",
            format!(
                "the app is {} bytes; the most accepted is {MAX_APP_BYTES}",
                json.len()
            ),
        ));
        return out;
    }
    let mut value: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            out.problems
                .push(Problem::new("$", format!("not valid JSON: {e}")));
            return out;
        }
    };
    let found = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_str(json);
    // The text parsed above, so this pass cannot fail.
    let _ = Duplicates {
        path: "$".into(),
        found: &found,
    }
    .deserialize(&mut de);
    for path in found.into_inner() {
        let message = if path.starts_with("$.nodes.") && path.matches('.').count() == 2 {
            "this node id is used twice; ids must be unique (only the last is kept)"
        } else {
            "this key appears twice in one object (only the last is kept)"
        };
        out.problems.push(Problem::new(path, message));
    }

    let newer_minor = match check_version(&value) {
        Ok(newer) => newer,
        Err(problem) => {
            out.problems.push(problem);
            return out;
        }
    };
    if newer_minor {
        out.warnings.push(Problem::new(
            "$.format",
            format!(
                "written in a newer format ({}) than this version reads ({}); what it does not know is left out",
                value["format"].as_str().unwrap_or_default(),
                FormatVersion::CURRENT
            ),
        ));
    }

    // Each round reads the document until its first error; an unknown field or an unreadable
    // node is recorded, taken out, and the reading goes on, within a budget of work.
    let rounds = (READ_BUDGET_BYTES / json.len().max(1)).clamp(16, 10_000);
    for round in 0.. {
        if round == rounds {
            out.doc = None;
            out.problems.push(Problem::new(
                "$",
                format!(
                    "reading stopped after {rounds} unknown fields or unreadable nodes; fix these and check again"
                ),
            ));
            break;
        }
        match serde_path_to_error::deserialize::<_, AppDoc>(&value) {
            Ok(doc) => {
                out.doc = Some(doc);
                break;
            }
            Err(error) => {
                let segments: Vec<String> = error
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        _ => None,
                    })
                    .collect();
                let message = error.into_inner().to_string();
                if let Some(field) = unknown_field(&message) {
                    let expected = expected_fields(&message);
                    if let Some(path) = remove_key(&mut value, &segments, &field, &expected) {
                        if newer_minor {
                            out.warnings
                                .push(Problem::new(path, "not known to this version; ignored"));
                        } else {
                            out.problems.push(Problem::new(path, message));
                        }
                        continue;
                    }
                }
                // An unreadable node is left out so the rest can still be checked.
                if segments.len() >= 2 && segments[0] == "nodes" {
                    let id = segments[1].clone();
                    if let Some(nodes) = value.get_mut("nodes").and_then(Value::as_object_mut) {
                        if nodes.remove(&id).is_some() {
                            out.problems
                                .push(Problem::new(path_of(&segments), message.clone()));
                            out.broken.insert(id);
                            continue;
                        }
                    }
                }
                out.problems.push(Problem::new(path_of(&segments), message));
                break;
            }
        }
    }
    out
}

fn path_of(segments: &[String]) -> String {
    segments.iter().fold("$".to_owned(), |path, s| {
        if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
            format!("{path}[{s}]")
        } else {
            push_key(&path, s)
        }
    })
}

/// Whether the app's format is newer in its minor version; an error when it is missing,
/// unreadable or of another major version.
fn check_version(value: &Value) -> Result<bool, Problem> {
    let Some(object) = value.as_object() else {
        return Err(Problem::new("$", "an app is a JSON object"));
    };
    let Some(format) = object.get("format") else {
        return Err(Problem::new(
            "$.format",
            format!(
                "missing: an app names its format version (\"format\": \"{}\")",
                FormatVersion::CURRENT
            ),
        ));
    };
    let version: FormatVersion = format
        .as_str()
        .ok_or_else(|| "is not a string".to_owned())
        .and_then(str::parse)
        .map_err(|e| Problem::new("$.format", e))?;
    if version.major != FormatVersion::CURRENT.major {
        return Err(Problem::new(
            "$.format",
            format!(
                "format {version} is not supported: this version reads format {}.x",
                FormatVersion::CURRENT.major
            ),
        ));
    }
    Ok(version.minor > FormatVersion::CURRENT.minor)
}

/// The field named by serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// The fields serde's message says it expected ("expected one of `a`, `b`", "expected `a`
/// or `b`"): the fields of the object that holds the unknown one.
fn expected_fields(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once(", expected ") else {
        return Vec::new();
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Takes `field` out of the object at `segments`, or out of the first object below it that
/// has it (serde reports errors inside a node at the node's path); returns its path. Below
/// the path, an object whose other keys are all `expected` (the type that refused the field)
/// is taken first: a field unknown in a chat message may be a known field of its node.
fn remove_key(
    value: &mut Value,
    segments: &[String],
    field: &str,
    expected: &[String],
) -> Option<String> {
    // The path may end with the unknown field itself.
    let segments = match segments.split_last() {
        Some((last, parent)) if last == field => parent,
        _ => segments,
    };
    let mut at = value;
    for s in segments {
        at = match at {
            Value::Object(map) => map.get_mut(s)?,
            Value::Array(items) => items.get_mut(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    let base = path_of(segments);
    if !expected.is_empty() {
        let fits = |map: &serde_json::Map<String, Value>| {
            map.contains_key(field)
                && map
                    .keys()
                    .all(|k| k == field || k == "kind" || expected.iter().any(|e| e == k))
        };
        if let Some(path) = remove_below(at, field, &base, &fits) {
            return Some(path);
        }
    }
    remove_below(at, field, &base, &|map| map.contains_key(field))
}

fn remove_below(
    value: &mut Value,
    field: &str,
    path: &str,
    fits: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
) -> Option<String> {
    match value {
        Value::Object(map) => {
            if fits(map) {
                map.remove(field);
                return Some(push_key(path, field));
            }
            map.iter_mut()
                .find_map(|(k, v)| remove_below(v, field, &push_key(path, k), fits))
        }
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .find_map(|(i, v)| remove_below(v, field, &format!("{path}[{i}]"), fits)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(nodes: &str) -> String {
        format!(r#"{{"format":"1.0","id":"a","name":"A","nodes":{{{nodes}}}}}"#)
    }

    #[test]
    fn a_file_full_of_unknown_fields_is_read_within_a_budget() {
        // 1 MiB of nodes and 5,000 unknown fields: one reading per field would be 5,000
        // readings of the whole file (minutes); the budget stops early and says so.
        let nodes: Vec<String> = (0..20_000)
            .map(|i| format!(r#""n{i}":{{"kind":"text","text":"some words for node {i}"}}"#))
            .collect();
        let junk: Vec<String> = (0..5_000).map(|i| format!(r#""zz{i}":0"#)).collect();
        let json = format!(
            r#"{{"format":"1.0","id":"a","name":"A","nodes":{{{}}},{}}}"#,
            nodes.join(","),
            junk.join(",")
        );
        let loaded = load(&json);
        let rounds = READ_BUDGET_BYTES / json.len();
        assert!(
            loaded.problems.len() <= rounds + 1,
            "{}",
            loaded.problems.len()
        );
        assert!(loaded
            .problems
            .last()
            .is_some_and(|p| p.message.contains("reading stopped")));
        assert!(loaded.doc.is_none());
    }

    #[test]
    fn an_unknown_field_is_taken_from_the_object_that_refused_it() {
        // `title` is unknown in a chat message and known in its node: the message's goes.
        let chat = r#""c":{"kind":"chat","title":"Talk","model":"m","messages":[{"role":"user","content":"hi","title":"x"}]}"#;
        let loaded = load(&app(chat));
        let paths: Vec<_> = loaded.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["$.nodes.c.messages[0].title"]);
        // In a newer minor it is ignored, and the node keeps its own title.
        let newer = load(&app(chat).replace(r#""format":"1.0""#, r#""format":"1.3""#));
        assert!(newer.problems.is_empty(), "{:?}", newer.problems);
        let doc = newer.doc.unwrap();
        assert_eq!(doc.nodes["c"].title(), Some("Talk"));
    }

    #[test]
    fn a_valid_app_loads() {
        let loaded = load(&app(
            r#""q":{"kind":"input"},"t":{"kind":"text","text":"hi"}"#,
        ));
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.doc.unwrap().nodes.len(), 2);
    }

    #[test]
    fn unknown_fields_and_duplicates_are_all_reported() {
        let loaded = load(&app(
            r#""q":{"kind":"input","colour":1},"q":{"kind":"input"},"g":{"kind":"generate","model":"m","prompt":"p","params":{"temprature":0.5}}"#,
        ));
        let paths: Vec<_> = loaded.problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"$.nodes.q"), "{paths:?}");
        assert!(paths.contains(&"$.nodes.g.params.temprature"), "{paths:?}");
        assert!(loaded.doc.is_some());
    }

    #[test]
    fn versions_are_checked() {
        let newer = load(r#"{"format":"1.7","id":"a","name":"A","nodes":{},"future":true}"#);
        assert!(newer.problems.is_empty(), "{:?}", newer.problems);
        assert_eq!(newer.warnings.len(), 2);
        let major = load(r#"{"format":"2.0","id":"a","name":"A","nodes":{}}"#);
        assert_eq!(major.problems[0].path, "$.format");
        assert!(major.doc.is_none());
        for bad in [r#"{"id":"a"}"#, r#"{"format":"one"}"#, "[]", "{", ""] {
            assert!(!load(bad).problems.is_empty(), "{bad}");
        }
    }

    #[test]
    fn an_unreadable_node_is_left_out_and_the_rest_is_read() {
        let loaded = load(&app(
            r#""x":{"kind":"teleport"},"y":{"kind":"text","text":"ok"}"#,
        ));
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        assert!(loaded.problems[0].path.starts_with("$.nodes.x"));
        assert!(loaded.broken.contains("x"));
        assert!(loaded.doc.unwrap().nodes.contains_key("y"));
    }
}
