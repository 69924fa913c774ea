//! Checking an app and making its graph: a [`Plan`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rag_core::{Error, ImageRequest, ModelProfile, Role};

use crate::doc::{AppDoc, Node, Sampling, ValueKind};
use crate::load::{self, Problem, Problems};
use crate::refs::{self, Reference};
use crate::secrets;

/// The models an app may name, and what each takes: the validator asks it, before any run.
///
/// [`BedrockCatalog`] knows the models of rag-core's tables; a host that serves other models
/// (custom or imported models, a local server) wraps it.
pub trait Catalog: Send + Sync {
    /// The profile of a text model (`generate`, `rag` and `chat` nodes), or why it is not
    /// known.
    fn text_model(&self, model_id: &str) -> Result<ModelProfile, String>;

    /// Checks an image request against the image model, or says why the model is not known.
    /// The prompt given at validation is the template's literal text (references are only
    /// resolved when the app runs, where the check is made again).
    fn check_image(&self, model_id: &str, request: &ImageRequest) -> Result<(), ImageProblem>;
}

/// Why an image node's settings were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProblem {
    /// The model id is not an image model the catalogue knows.
    UnknownModel(String),
    /// A setting is out of range: the field (`width`, ...) and why.
    OutOfRange {
        /// The field, as the node spells it.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The models of rag-core's tables: Bedrock's text models ([`ModelProfile::for_model_id`])
/// and image models ([`rag_core::model::ImageModelProfile`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BedrockCatalog;

impl Catalog for BedrockCatalog {
    fn text_model(&self, model_id: &str) -> Result<ModelProfile, String> {
        if rag_core::model::ImageModelProfile::for_model_id(model_id).is_ok() {
            return Err(format!(
                "`{model_id}` is an image model: use it in an `image` node"
            ));
        }
        ModelProfile::for_model_id(model_id).map_err(|e| match e {
            Error::Config { message } => message,
            other => other.to_string(),
        })
    }

    fn check_image(&self, model_id: &str, request: &ImageRequest) -> Result<(), ImageProblem> {
        let profile = rag_core::model::ImageModelProfile::for_model_id(model_id).map_err(|e| {
            ImageProblem::UnknownModel(if ModelProfile::for_model_id(model_id).is_ok() {
                format!("`{model_id}` is a text model, not an image model")
            } else {
                match e {
                    Error::Config { message } => message,
                    other => other.to_string(),
                }
            })
        })?;
        profile.check(request).map_err(|e| match e {
            Error::InvalidInput { field, message } => ImageProblem::OutOfRange {
                field: field.trim_start_matches("image.").to_owned(),
                message,
            },
            other => ImageProblem::OutOfRange {
                field: String::new(),
                message: other.to_string(),
            },
        })
    }
}

/// A checked app, ready to run: its nodes, their references and the order between them.
/// Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Plan {
    inner: Arc<PlanInner>,
}

#[derive(Debug)]
struct PlanInner {
    doc: AppDoc,
    nodes: Vec<PlanNode>,
    index: HashMap<String, usize>,
    warnings: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub(crate) struct PlanNode {
    pub(crate) id: String,
    pub(crate) node: Node,
    /// The nodes it references, each once, by index.
    pub(crate) deps: Vec<usize>,
    /// The nodes that reference it, by index.
    pub(crate) dependents: Vec<usize>,
    /// Its model's profile, for the nodes that call a text model.
    pub(crate) profile: Option<ModelProfile>,
}

impl Plan {
    /// Loads, checks and plans the app in `json` with [`BedrockCatalog`]; every problem found
    /// is in the error.
    pub fn from_json(json: &str) -> Result<Plan, Problems> {
        Plan::from_json_with(json, &BedrockCatalog)
    }

    /// [`Plan::from_json`] with another catalogue of models.
    pub fn from_json_with(json: &str, catalog: &dyn Catalog) -> Result<Plan, Problems> {
        let loaded = load::load(json);
        let mut problems = loaded.problems;
        let Some(doc) = loaded.doc else {
            problems.sort();
            return Err(Problems(problems));
        };
        problems.extend(check(&doc, catalog, &loaded.broken));
        if !problems.is_empty() {
            problems.sort();
            problems.dedup();
            return Err(Problems(problems));
        }
        Ok(Plan::build(doc, catalog, loaded.warnings))
    }

    /// Checks and plans a document already read.
    pub fn new(doc: AppDoc) -> Result<Plan, Problems> {
        Plan::with_catalog(doc, &BedrockCatalog)
    }

    /// [`Plan::new`] with another catalogue of models.
    pub fn with_catalog(doc: AppDoc, catalog: &dyn Catalog) -> Result<Plan, Problems> {
        let mut problems = check(&doc, catalog, &BTreeSet::new());
        if !problems.is_empty() {
            problems.sort();
            problems.dedup();
            return Err(Problems(problems));
        }
        Ok(Plan::build(doc, catalog, Vec::new()))
    }

    fn build(doc: AppDoc, catalog: &dyn Catalog, warnings: Vec<Problem>) -> Plan {
        let index: HashMap<String, usize> = doc
            .nodes
            .keys()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        let mut nodes: Vec<PlanNode> = doc
            .nodes
            .iter()
            .map(|(id, node)| {
                let deps: BTreeSet<usize> = templates(node)
                    .iter()
                    .flat_map(|(_, t, _)| refs::references(t))
                    .filter_map(|r| index.get(&r.node).copied())
                    .collect();
                PlanNode {
                    id: id.clone(),
                    node: node.clone(),
                    deps: deps.into_iter().collect(),
                    dependents: Vec::new(),
                    profile: node.model().and_then(|m| match node {
                        Node::Image(_) => None,
                        _ => catalog.text_model(m).ok(),
                    }),
                }
            })
            .collect();
        for i in 0..nodes.len() {
            for d in nodes[i].deps.clone() {
                nodes[d].dependents.push(i);
            }
        }
        Plan {
            inner: Arc::new(PlanInner {
                doc,
                nodes,
                index,
                warnings,
            }),
        }
    }

    /// The document.
    pub fn doc(&self) -> &AppDoc {
        &self.inner.doc
    }

    /// What loading ignored (fields of a newer minor format version).
    pub fn warnings(&self) -> &[Problem] {
        &self.inner.warnings
    }

    /// The node ids, in the document's (sorted) order.
    pub fn node_ids(&self) -> impl Iterator<Item = &str> {
        self.inner.nodes.iter().map(|n| n.id.as_str())
    }

    /// The ids of the nodes `id` references.
    pub fn dependencies(&self, id: &str) -> Vec<&str> {
        self.inner.index.get(id).map_or_else(Vec::new, |&i| {
            self.inner.nodes[i]
                .deps
                .iter()
                .map(|&d| self.inner.nodes[d].id.as_str())
                .collect()
        })
    }

    /// The ids of the nodes that run again when `id`'s value changes: those that reference
    /// it, directly or through others.
    pub fn downstream(&self, id: &str) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<usize> = self.inner.index.get(id).into_iter().copied().collect();
        while let Some(i) = stack.pop() {
            for &d in &self.inner.nodes[i].dependents {
                if out.insert(self.inner.nodes[d].id.as_str()) {
                    stack.push(d);
                }
            }
        }
        out
    }

    pub(crate) fn nodes(&self) -> &[PlanNode] {
        &self.inner.nodes
    }
}

/// Checks a document: every problem at once, sorted by path. Empty when it can run.
pub fn validate(doc: &AppDoc) -> Vec<Problem> {
    let mut problems = check(doc, &BedrockCatalog, &BTreeSet::new());
    problems.sort();
    problems.dedup();
    problems
}

/// Loads and checks `json`: every problem at once, sorted by path (load and validation
/// alike). Empty when it can run.
pub fn validate_json(json: &str) -> Vec<Problem> {
    match Plan::from_json(json) {
        Ok(_) => Vec::new(),
        Err(Problems(problems)) => problems,
    }
}

/// Where a template may sit, which says what its references may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Text only.
    Text,
    /// A user message: text, and images for a model that takes them.
    UserMessage,
}

/// The templates of a node: (field path below the node, template, slot).
pub(crate) fn templates(node: &Node) -> Vec<(String, &str, Slot)> {
    match node {
        Node::Input(_) | Node::Text(_) => Vec::new(),
        Node::Generate(g) => {
            let mut out = vec![("prompt".to_owned(), g.prompt.as_str(), Slot::UserMessage)];
            if let Some(s) = &g.system {
                out.push(("system".to_owned(), s.as_str(), Slot::Text));
            }
            out
        }
        Node::Rag(r) => vec![("query".to_owned(), r.query.as_str(), Slot::Text)],
        Node::Chat(c) => {
            let mut out: Vec<_> = c
                .messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        format!("messages[{i}].content"),
                        m.content.as_str(),
                        if m.role == Role::User {
                            Slot::UserMessage
                        } else {
                            Slot::Text
                        },
                    )
                })
                .collect();
            if let Some(s) = &c.system {
                out.push(("system".to_owned(), s.as_str(), Slot::Text));
            }
            out
        }
        Node::Image(i) => {
            let mut out = vec![("prompt".to_owned(), i.prompt.as_str(), Slot::Text)];
            if let Some(n) = &i.negative_prompt {
                out.push(("negative_prompt".to_owned(), n.as_str(), Slot::Text));
            }
            out
        }
    }
}

/// The kind of value `reference` resolves to, given the node it names.
pub(crate) fn value_kind(node: &Node, field: Option<&str>) -> ValueKind {
    match (node, field) {
        (Node::Image(_), None | Some("image")) => ValueKind::Image,
        _ => ValueKind::Text,
    }
}

/// The longest id accepted (node ids, binding names and app ids).
pub const MAX_ID_LEN: usize = 64;

fn id_problem(what: &str, id: &str) -> Option<String> {
    if id.is_empty() {
        Some(format!("{what} is empty"))
    } else if id.len() > MAX_ID_LEN {
        Some(format!(
            "{what} is {} bytes long; at most {MAX_ID_LEN}",
            id.len()
        ))
    } else if !id.chars().all(refs::is_id_char) {
        Some(format!(
            "{what} `{id}` may hold only ASCII letters, digits, `_` and `-`"
        ))
    } else {
        None
    }
}

fn node_path(id: &str) -> String {
    if !id.is_empty() && id.chars().all(refs::is_id_char) {
        format!("$.nodes.{id}")
    } else {
        format!("$.nodes[{}]", serde_json::Value::String(id.to_owned()))
    }
}

fn check(doc: &AppDoc, catalog: &dyn Catalog, broken: &BTreeSet<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(message) = id_problem("the app id", &doc.id) {
        problems.push(Problem::new("$.id", message));
    }
    if doc.name.trim().is_empty() {
        problems.push(Problem::new("$.name", "the app has no name"));
    }
    if let Some(forked) = &doc.forked_from {
        if !is_digest(&forked.digest) {
            problems.push(Problem::new(
                "$.forked_from.digest",
                "not a digest: `sha256:` and 64 lowercase hex digits",
            ));
        }
    }
    if doc.nodes.is_empty() && broken.is_empty() {
        problems.push(Problem::new("$.nodes", "the app has no nodes"));
    }
    for id in doc.layout.keys() {
        if !doc.nodes.contains_key(id) && !broken.contains(id) {
            problems.push(Problem::new(
                node_path(id).replacen("$.nodes", "$.layout", 1),
                format!("a position for `{id}`, which no node has"),
            ));
        }
    }
    for (id, node) in &doc.nodes {
        let path = node_path(id);
        if let Some(message) = id_problem("the node id", id) {
            problems.push(Problem::new(&path, message));
        }
        check_node(doc, catalog, broken, id, node, &path, &mut problems);
    }
    problems.extend(cycles(doc));
    problems.extend(secrets::scan(doc));
    problems
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn check_node(
    doc: &AppDoc,
    catalog: &dyn Catalog,
    broken: &BTreeSet<String>,
    id: &str,
    node: &Node,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let mut push = |field: &str, message: String| {
        let at = if field.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{field}")
        };
        problems.push(Problem::new(at, message));
    };
    // The model and what it takes.
    let profile = match node {
        Node::Generate(_) | Node::Rag(_) | Node::Chat(_) => {
            let model = node.model().unwrap_or_default();
            match catalog.text_model(model) {
                Ok(profile) => {
                    if !profile.streams {
                        push(
                            "model",
                            format!("`{model}` does not stream its answers on Bedrock, and nodes stream"),
                        );
                    }
                    Some(profile)
                }
                Err(message) => {
                    push("model", message);
                    None
                }
            }
        }
        _ => None,
    };
    let sampling: Option<&Sampling> = match node {
        Node::Generate(g) => Some(&g.params),
        Node::Rag(r) => Some(&r.params),
        Node::Chat(c) => Some(&c.params),
        _ => None,
    };
    if let Some(sampling) = sampling {
        for (field, value) in [
            ("temperature", sampling.temperature),
            ("top_p", sampling.top_p),
        ] {
            if let Some(v) = value {
                if !(0.0..=1.0).contains(&v) {
                    push(
                        &format!("params.{field}"),
                        format!("{v} is outside 0.0..=1.0"),
                    );
                }
            }
        }
        let params = sampling.params();
        // `validate` and `check_params` stop at their first problem: each setting is checked
        // on its own (the others valid) so that every problem is reported.
        let valid = rag_core::GenerationParams {
            temperature: None,
            top_p: None,
            top_k: None,
            max_tokens: 1,
            stop_sequences: Vec::new(),
        };
        let alone = [
            rag_core::GenerationParams {
                top_k: params.top_k,
                ..valid.clone()
            },
            rag_core::GenerationParams {
                max_tokens: params.max_tokens,
                ..valid.clone()
            },
            rag_core::GenerationParams {
                stop_sequences: params.stop_sequences.clone(),
                ..valid.clone()
            },
        ];
        let mut max_tokens_refused = false;
        for one in &alone {
            if let Err(Error::InvalidInput { field, message }) = one.validate() {
                max_tokens_refused |= field == "params.max_tokens";
                push(&field.replace("stop_sequences", "stop"), message);
            }
        }
        if let Some(profile) = &profile {
            let model = node.model().unwrap_or_default();
            let sampling_alone = rag_core::GenerationParams {
                temperature: params.temperature,
                top_p: params.top_p,
                ..valid.clone()
            };
            let checks = if max_tokens_refused {
                vec![&sampling_alone]
            } else {
                vec![&alone[1], &sampling_alone]
            };
            for one in checks {
                if let Err(Error::InvalidInput { field, message }) =
                    profile.check_params(model, one)
                {
                    push(field, message);
                }
            }
        }
    }
    // The references of each template.
    for (field, template, slot) in templates(node) {
        let pieces = match refs::parse(template) {
            Ok(pieces) => pieces,
            Err(errors) => {
                for e in errors {
                    push(&field, e);
                }
                continue;
            }
        };
        for piece in pieces {
            let refs::Piece::Ref(reference) = piece else {
                continue;
            };
            check_reference(
                doc,
                broken,
                id,
                &reference,
                slot,
                profile.as_ref(),
                node.model().unwrap_or_default(),
                |m| push(&field, m),
            );
        }
    }
    match node {
        Node::Input(input) => {
            let max = input
                .max_chars
                .unwrap_or(crate::doc::InputNode::DEFAULT_MAX_CHARS);
            if input.max_chars == Some(0) {
                push("max_chars", "must be at least 1".into());
            }
            if let Some(default) = &input.default {
                if default.chars().count() > max {
                    push("default", format!("longer than max_chars ({max})"));
                }
            }
        }
        Node::Text(_) => {}
        Node::Generate(g) => {
            if g.prompt.trim().is_empty() {
                push("prompt", "the prompt is empty".into());
            }
        }
        Node::Rag(r) => {
            if let Some(message) = id_problem("the retriever binding name", &r.retriever) {
                push("retriever", message);
            }
            if r.query.trim().is_empty() {
                push("query", "the query is empty".into());
            }
            if let Some(k) = r.top_k {
                if !(1..=crate::run::MAX_TOP_K).contains(&k) {
                    push(
                        "top_k",
                        format!("{k} is outside 1..={}", crate::run::MAX_TOP_K),
                    );
                }
            }
        }
        Node::Chat(c) => {
            if c.messages.is_empty() {
                push(
                    "messages",
                    "a chat needs at least one message, from the user".into(),
                );
            }
            if c.messages.first().is_some_and(|m| m.role != Role::User) {
                push(
                    "messages[0].role",
                    "the first message is from the user".into(),
                );
            }
            if c.messages.last().is_some_and(|m| m.role != Role::User) {
                push(
                    &format!("messages[{}].role", c.messages.len() - 1),
                    "the last message is from the user (the model answers it)".into(),
                );
            }
            for (i, w) in c.messages.windows(2).enumerate() {
                if w[0].role == w[1].role {
                    push(
                        &format!("messages[{}].role", i + 1),
                        "roles must alternate between user and assistant".into(),
                    );
                }
            }
        }
        Node::Image(image) => {
            let literal: String = refs::parse(&image.prompt)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| match p {
                    refs::Piece::Text(t) => Some(t),
                    refs::Piece::Ref(_) => None,
                })
                .collect();
            let has_refs = refs::references(&image.prompt).next().is_some();
            let request = ImageRequest {
                // With references, the length is checked at run time, once they are resolved.
                prompt: if has_refs || literal.trim().is_empty() {
                    "x".to_owned()
                } else {
                    literal
                },
                negative_prompt: None,
                width: image.width,
                height: image.height,
                cfg_scale: None,
                seed: None,
            };
            // The negative prompt, when it is literal text, is checked here too.
            let negative = image
                .negative_prompt
                .as_deref()
                .filter(|n| refs::references(n).next().is_none() && !n.trim().is_empty())
                .map(str::to_owned);
            if image.prompt.trim().is_empty() {
                push("prompt", "the prompt is empty".into());
            }
            // `check_image` stops at its first problem: each optional setting is checked in a
            // request of its own, so that every problem is reported (repeats are dropped).
            let requests = [
                request.clone(),
                ImageRequest {
                    negative_prompt: negative,
                    ..request.clone()
                },
                ImageRequest {
                    cfg_scale: image.cfg_scale.map(|c| c as f32),
                    ..request.clone()
                },
                ImageRequest {
                    seed: image.seed,
                    ..request.clone()
                },
            ];
            let mut seen = Vec::new();
            for one in &requests {
                match catalog.check_image(&image.model, one) {
                    Ok(()) => {}
                    Err(problem) if seen.contains(&problem) => {}
                    Err(problem) => {
                        match &problem {
                            ImageProblem::UnknownModel(message) => push("model", message.clone()),
                            ImageProblem::OutOfRange { field, message } => {
                                push(field, message.clone())
                            }
                        }
                        seen.push(problem);
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_reference(
    doc: &AppDoc,
    broken: &BTreeSet<String>,
    from: &str,
    reference: &Reference,
    slot: Slot,
    profile: Option<&ModelProfile>,
    model: &str,
    mut push: impl FnMut(String),
) {
    let Some(target) = doc.nodes.get(&reference.node) else {
        if !broken.contains(&reference.node) {
            push(format!(
                "{reference} names `{}`, which no node has",
                reference.node
            ));
        }
        return;
    };
    if reference.node == from {
        push(format!("{reference}: a node cannot reference itself"));
        return;
    }
    if let Some(field) = &reference.field {
        if !target.fields().contains(&field.as_str()) {
            push(format!(
                "{reference}: a {} node has no field `{field}` (its fields: {})",
                target.kind(),
                target.fields().join(", ")
            ));
            return;
        }
    }
    if value_kind(target, reference.field.as_deref()) == ValueKind::Image {
        match slot {
            Slot::Text => push(format!(
                "{reference} is an image where text is expected (images go only in the user messages of models that take them)"
            )),
            Slot::UserMessage => {
                if profile.is_some_and(|p| !p.images) {
                    push(format!(
                        "{reference} is an image, and `{model}` does not take images"
                    ));
                }
            }
        }
    }
}

/// Every cycle of references, each once, with its path (`a → b → a`).
fn cycles(doc: &AppDoc) -> Vec<Problem> {
    let edges: BTreeMap<&str, BTreeSet<&str>> = doc
        .nodes
        .iter()
        .map(|(id, node)| {
            let deps = templates(node)
                .into_iter()
                .flat_map(|(_, t, _)| refs::references(t).collect::<Vec<_>>())
                .filter(|r| doc.nodes.contains_key(&r.node) && r.node != *id)
                .map(|r| doc.nodes.get_key_value(&r.node).map(|(k, _)| k.as_str()))
                .collect::<Option<BTreeSet<_>>>()
                .unwrap_or_default();
            (id.as_str(), deps)
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = edges.keys().map(|k| (*k, Mark::New)).collect();
    let mut problems = Vec::new();
    for &start in edges.keys() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search; `stack` is the current path.
        let mut stack: Vec<(&str, Vec<&str>)> =
            vec![(start, edges[start].iter().copied().collect())];
        marks.insert(start, Mark::Open);
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => match marks[next] {
                    Mark::New => {
                        marks.insert(next, Mark::Open);
                        stack.push((next, edges[next].iter().copied().collect()));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut path: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                        path.push(next);
                        problems.push(Problem::new(
                            node_path(next),
                            format!(
                                "a cycle of references: {} (each node waits for the next)",
                                path.join(" → ")
                            ),
                        ));
                    }
                    Mark::Done => {}
                },
                None => {
                    marks.insert(node, Mark::Done);
                    stack.pop();
                }
            }
        }
    }
    problems
}
