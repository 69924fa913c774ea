//! The executor: a [`Plan`] run as a streaming graph.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use rag_core::{
    Ask, ChatTemplate, Chunk, Citation, Error, Event, Generator, HistoryStore, Image,
    ImageGenerator, ImageRequest, Message, ModelFamily, Pipeline, Prompt, PromptKind,
    PromptTemplate, Result, Retriever, RetryPolicy, SessionId, Stage, StopReason, Usage,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::doc::{ChatNode, GenerateNode, ImageNode, Node, RagNode};
use crate::plan::{Plan, PlanNode};
use crate::refs::{self, Piece};
use crate::share::sha256;

/// The most passages a `rag` node may ask for.
pub const MAX_TOP_K: usize = 100;

/// The longest text a node's template may render to, in bytes. A template may reference the
/// same node many times (`{{@doc}}{{@doc}}...`): without a bound, a small shared app could make
/// the runner build a prompt of gigabytes before any model refuses it.
pub const MAX_PROMPT_BYTES: usize = 4 << 20;

/// Resolves the model ids of an app to generators: the host's side of an app (credentials
/// and clients live here, never in the app). `rag_app::BedrockModels` (feature `bedrock`)
/// resolves Bedrock ids.
pub trait Models: Send + Sync + fmt::Debug {
    /// The generator of a text model. It must take chat prompts ([`PromptKind::Chat`]).
    fn generator(&self, model_id: &str) -> Result<Arc<dyn Generator>>;

    /// The generator of an image model.
    fn image_generator(&self, model_id: &str) -> Result<Arc<dyn ImageGenerator>>;

    /// What answers a `rag` node's question: by default [`Models::generator`] with the
    /// model's own template (chosen from its profile). A host can answer otherwise, for
    /// example offline with an extractive generator and its template.
    fn rag_answerer(&self, model_id: &str) -> Result<RagAnswerer> {
        Ok(RagAnswerer {
            generator: self.generator(model_id)?,
            template: None,
        })
    }
}

impl<T: Models + ?Sized> Models for Box<T> {
    fn generator(&self, model_id: &str) -> Result<Arc<dyn Generator>> {
        (**self).generator(model_id)
    }
    fn image_generator(&self, model_id: &str) -> Result<Arc<dyn ImageGenerator>> {
        (**self).image_generator(model_id)
    }
    fn rag_answerer(&self, model_id: &str) -> Result<RagAnswerer> {
        (**self).rag_answerer(model_id)
    }
}

impl<T: Models + ?Sized> Models for Arc<T> {
    fn generator(&self, model_id: &str) -> Result<Arc<dyn Generator>> {
        (**self).generator(model_id)
    }
    fn image_generator(&self, model_id: &str) -> Result<Arc<dyn ImageGenerator>> {
        (**self).image_generator(model_id)
    }
    fn rag_answerer(&self, model_id: &str) -> Result<RagAnswerer> {
        (**self).rag_answerer(model_id)
    }
}

/// The generator of a `rag` node's pipeline, and the template it needs when the model's own
/// would not fit it.
#[derive(Debug, Clone)]
pub struct RagAnswerer {
    /// The generator.
    pub generator: Arc<dyn Generator>,
    /// Its template; `None` for the model's own.
    pub template: Option<Arc<dyn PromptTemplate>>,
}

/// What a node made.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct NodeOutput {
    /// Its text (empty for an image node).
    pub text: String,
    /// Its image, for an image node.
    pub image: Option<Image>,
    /// The sources of a `rag` node's answer, numbered as the answer cites them.
    pub citations: Vec<Citation>,
    /// Token counts of its model call, when the model reported them.
    pub usage: Option<Usage>,
    /// Why the model stopped, when it said.
    pub stop_reason: Option<StopReason>,
    /// A chat node's conversation: the seed messages and the answers.
    pub conversation: Vec<Message>,
}

impl NodeOutput {
    fn text(text: String) -> Self {
        NodeOutput {
            text,
            ..Default::default()
        }
    }

    /// The citations as a prompt shows them: one line each, `[n] title (uri)`.
    pub fn citations_text(&self) -> String {
        let mut out = String::new();
        for c in &self.citations {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!(
                "[{}] {}",
                c.index,
                c.title.as_deref().unwrap_or(&c.passage_id)
            ));
            if let Some(uri) = &c.uri {
                out.push_str(&format!(" ({uri})"));
            }
        }
        out
    }

    /// A digest of everything in it that a dependent may read.
    fn fingerprint(&self) -> String {
        let mut material = json!({
            "text": self.text,
            "citations": self.citations_text(),
        })
        .to_string()
        .into_bytes();
        if let Some(image) = &self.image {
            material.extend_from_slice(image.bytes());
        }
        sha256(&material)
    }
}

/// One item of a [`RunStream`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RunEvent {
    /// A node started: its references are done. `cached` when its output is reused.
    Started {
        /// The node.
        node: String,
        /// Whether its output comes from the cache (no model call).
        cached: bool,
    },
    /// A piece of a node's answer, as the model produced it.
    Delta {
        /// The node.
        node: String,
        /// The text.
        text: String,
    },
    /// The sources of a `rag` node's answer (before its first delta).
    Citations {
        /// The node.
        node: String,
        /// The sources, numbered as the answer cites them.
        citations: Vec<Citation>,
    },
    /// Something went wrong that did not stop the node.
    Warning {
        /// The node.
        node: String,
        /// What happened.
        message: String,
    },
    /// A node is done.
    Done {
        /// The node.
        node: String,
        /// What it made.
        output: Arc<NodeOutput>,
        /// Whether it came from the cache.
        cached: bool,
    },
    /// A node failed; the nodes that depend on it are skipped.
    Failed {
        /// The node.
        node: String,
        /// Why.
        error: Error,
    },
    /// A node did not run because a node it depends on failed or was skipped.
    Skipped {
        /// The node.
        node: String,
        /// The node it waited for.
        because: String,
    },
    /// The run is over: always the last event, exactly once.
    Finished(RunReport),
}

impl RunEvent {
    /// The node the event is about (`None` for [`RunEvent::Finished`]).
    pub fn node(&self) -> Option<&str> {
        match self {
            RunEvent::Started { node, .. }
            | RunEvent::Delta { node, .. }
            | RunEvent::Citations { node, .. }
            | RunEvent::Warning { node, .. }
            | RunEvent::Done { node, .. }
            | RunEvent::Failed { node, .. }
            | RunEvent::Skipped { node, .. } => Some(node),
            RunEvent::Finished(_) => None,
        }
    }
}

/// How a run went.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The output of every node that finished.
    pub outputs: BTreeMap<String, Arc<NodeOutput>>,
    /// The nodes that failed, with why.
    pub failed: BTreeMap<String, Error>,
    /// The nodes that were skipped.
    pub skipped: BTreeSet<String>,
    /// The nodes whose output came from the cache.
    pub cached: BTreeSet<String>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl RunReport {
    /// Whether every node finished.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// The events of a run. Dropping it cancels every node still running (their model streams
/// are dropped, which cancels the calls).
pub type RunStream = Pin<Box<dyn Stream<Item = RunEvent> + Send>>;

/// The values of an app's `input` nodes, by node id.
pub type Inputs = BTreeMap<String, String>;

/// Runs apps: resolves their models and retriever bindings, runs every node as soon as the
/// nodes it references are done, and caches outputs so that a run after an edit makes only
/// the calls downstream of it.
#[derive(Debug, Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    models: Arc<dyn Models>,
    retrievers: HashMap<String, Arc<dyn Retriever>>,
    history: Option<Arc<dyn HistoryStore>>,
    concurrency: usize,
    retry: RetryPolicy,
    node_timeout: Duration,
    cache: Option<Mutex<HashMap<String, Arc<NodeOutput>>>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("models", &self.models)
            .field("retrievers", &self.retrievers.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

/// Builds a [`Runner`].
#[derive(Debug)]
#[must_use]
pub struct RunnerBuilder {
    models: Arc<dyn Models>,
    retrievers: HashMap<String, Arc<dyn Retriever>>,
    history: Option<Arc<dyn HistoryStore>>,
    concurrency: usize,
    retry: RetryPolicy,
    node_timeout: Duration,
    cache: bool,
}

impl Runner {
    /// The model calls in flight at once, by default.
    pub const DEFAULT_CONCURRENCY: usize = 4;
    /// How long one node may take, by default.
    pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(300);

    /// A builder with the host's models.
    pub fn builder(models: impl Models + 'static) -> RunnerBuilder {
        RunnerBuilder {
            models: Arc::new(models),
            retrievers: HashMap::new(),
            history: None,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
            node_timeout: Self::DEFAULT_NODE_TIMEOUT,
            cache: true,
        }
    }

    /// Forgets every cached output.
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.lock().expect("the cache lock").clear();
        }
    }

    /// Runs `plan` with `inputs`. The inputs, the retriever bindings and the models are
    /// checked before anything starts; a problem there is the error, and nothing runs.
    pub fn run(&self, plan: &Plan, inputs: &Inputs) -> Result<RunStream> {
        let prepared = self.prepare(plan, inputs)?;
        Ok(Box::pin(drive(self.inner.clone(), prepared)))
    }

    /// Sends `message` to the conversation of chat node `node`, as a run's `report` left it,
    /// and streams the answer as a run of that one node: its [`NodeOutput::conversation`]
    /// holds the whole conversation after it.
    pub fn continue_chat(
        &self,
        plan: &Plan,
        report: &RunReport,
        node: &str,
        message: &str,
    ) -> Result<RunStream> {
        let Some(Node::Chat(chat)) = plan.doc().nodes.get(node) else {
            return Err(Error::invalid_input(
                "node",
                format!("`{node}` is not a chat node"),
            ));
        };
        let Some(previous) = report.outputs.get(node) else {
            return Err(Error::invalid_input(
                "node",
                format!("`{node}` has no answer in this run to continue"),
            ));
        };
        if message.trim().is_empty() {
            return Err(Error::invalid_input("message", "the message is empty"));
        }
        let generator = self.text_generator(node, &chat.model)?;
        let mut conversation = previous.conversation.clone();
        conversation.push(Message::user(message));
        let system = chat
            .system
            .as_deref()
            .map(|s| render_text(s, &report.outputs))
            .transpose()?;
        let prompt = Prompt::Chat {
            system,
            messages: conversation.clone(),
        };
        let params = chat.params.params();
        let inner = self.inner.clone();
        let id = node.to_owned();
        Ok(Box::pin(async_stream::stream! {
            let started = Instant::now();
            yield RunEvent::Started { node: id.clone(), cached: false };
            let (tx, mut rx) = mpsc::unbounded_channel();
            // The same bound as a node of a run.
            let timeout = inner.node_timeout;
            let call = async {
                tokio::time::timeout(
                    timeout,
                    generate(&inner, &id, generator.as_ref(), &prompt, &params, &tx),
                )
                .await
                .unwrap_or(Err(Error::Timeout { stage: Stage::Generation, after: timeout }))
            };
            let mut call = std::pin::pin!(call);
            let result = loop {
                tokio::select! {
                    biased;
                    Some(event) = rx.recv() => yield event,
                    result = &mut call => break result,
                }
            };
            while let Ok(event) = rx.try_recv() {
                yield event;
            }
            let mut report = RunReport::default();
            match result {
                Ok(mut output) => {
                    conversation.push(Message::assistant(output.text.clone()));
                    output.conversation = conversation;
                    let output = Arc::new(output);
                    report.outputs.insert(id.clone(), output.clone());
                    yield RunEvent::Done { node: id.clone(), output, cached: false };
                }
                Err(error) => {
                    report.failed.insert(id.clone(), error.clone());
                    yield RunEvent::Failed { node: id.clone(), error };
                }
            }
            report.elapsed = started.elapsed();
            yield RunEvent::Finished(report);
        }))
    }

    fn text_generator(&self, node: &str, model: &str) -> Result<Arc<dyn Generator>> {
        let generator = self.inner.models.generator(model).map_err(|e| {
            Error::config(format!(
                "node `{node}`: model `{model}` is not available: {e}"
            ))
        })?;
        if !generator.accepts().fits(PromptKind::Chat) {
            return Err(Error::config(format!(
                "node `{node}`: the generator for `{model}` takes {}, and app nodes send chat prompts (call it through ConverseStream)",
                generator.accepts()
            )));
        }
        Ok(generator)
    }

    fn prepare(&self, plan: &Plan, inputs: &Inputs) -> Result<Prepared> {
        let doc = plan.doc();
        for name in inputs.keys() {
            if !matches!(doc.nodes.get(name), Some(Node::Input(_))) {
                return Err(Error::invalid_input(
                    "inputs",
                    format!(
                        "the app has no input `{name}` (its inputs: {})",
                        input_names(plan).join(", ")
                    ),
                ));
            }
        }
        let mut problems = Vec::new();
        let mut work = Vec::with_capacity(plan.nodes().len());
        for n in plan.nodes() {
            let w = match &n.node {
                Node::Input(input) => match inputs.get(&n.id).or(input.default.as_ref()) {
                    Some(value) => {
                        let max = input
                            .max_chars
                            .unwrap_or(crate::doc::InputNode::DEFAULT_MAX_CHARS);
                        if value.chars().count() > max {
                            problems
                                .push(format!("input `{}` is longer than {max} characters", n.id));
                        }
                        Work::Value(value.clone())
                    }
                    None => {
                        problems.push(format!("input `{}` has no value and no default", n.id));
                        Work::Value(String::new())
                    }
                },
                Node::Text(text) => Work::Value(text.text.clone()),
                Node::Generate(g) => match self.text_generator(&n.id, &g.model) {
                    Ok(generator) => Work::Generate(generator),
                    Err(e) => {
                        problems.push(e.to_string());
                        continue;
                    }
                },
                Node::Chat(c) => match self.text_generator(&n.id, &c.model) {
                    Ok(generator) => Work::Generate(generator),
                    Err(e) => {
                        problems.push(e.to_string());
                        continue;
                    }
                },
                Node::Rag(r) => {
                    let retriever = self.inner.retrievers.get(&r.retriever);
                    if retriever.is_none() {
                        problems.push(format!(
                            "node `{}`: no retriever is bound to `{}` (bound: {})",
                            n.id,
                            r.retriever,
                            self.inner
                                .retrievers
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if self.inner.history.is_none() {
                        problems.push(format!(
                            "node `{}`: rag nodes need a history store (RunnerBuilder::with_history)",
                            n.id
                        ));
                    }
                    let answerer = match self.inner.models.rag_answerer(&r.model) {
                        Ok(a) => Some(a),
                        Err(e) => {
                            problems.push(format!(
                                "node `{}`: model `{}` is not available: {e}",
                                n.id, r.model
                            ));
                            None
                        }
                    };
                    match (retriever, answerer, &self.inner.history) {
                        (Some(retriever), Some(answerer), Some(history)) => Work::Rag {
                            pipeline: rag_pipeline(
                                &self.inner,
                                n,
                                r,
                                answerer,
                                retriever.clone(),
                                history.clone(),
                            )
                            .map_err(|e| Error::config(format!("node `{}`: {e}", n.id)))?,
                        },
                        _ => continue,
                    }
                }
                Node::Image(i) => match self.inner.models.image_generator(&i.model) {
                    Ok(generator) => Work::Image(generator),
                    Err(e) => {
                        problems.push(format!(
                            "node `{}`: image model `{}` is not available: {e}",
                            n.id, i.model
                        ));
                        continue;
                    }
                },
            };
            work.push(w);
        }
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "the app cannot run here:\n  {}",
                problems.join("\n  ")
            )));
        }
        Ok(Prepared {
            plan: plan.clone(),
            work: Arc::new(work),
            run_id: uuid::Uuid::now_v7().simple().to_string(),
        })
    }
}

fn input_names(plan: &Plan) -> Vec<String> {
    plan.doc()
        .nodes
        .iter()
        .filter(|(_, n)| matches!(n, Node::Input(_)))
        .map(|(id, _)| id.clone())
        .collect()
}

impl RunnerBuilder {
    /// Binds `name` (what `rag` nodes name as their `retriever`) to `retriever`.
    pub fn with_retriever(
        mut self,
        name: impl Into<String>,
        retriever: impl Retriever + 'static,
    ) -> Self {
        self.retrievers.insert(name.into(), Arc::new(retriever));
        self
    }

    /// The history store of the `rag` nodes' pipelines (each node run is one turn of its own
    /// session, `app.<app id>.<node>.<run>`).
    pub fn with_history(mut self, history: impl HistoryStore + 'static) -> Self {
        self.history = Some(Arc::new(history));
        self
    }

    /// Model calls in flight at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// How model calls that fail before their first token are retried, as in the `Pipeline`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long one node may take in all.
    pub fn with_node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Whether outputs are cached between runs (on by default).
    pub fn with_cache(mut self, cache: bool) -> Self {
        self.cache = cache;
        self
    }

    /// The runner.
    pub fn build(self) -> Result<Runner> {
        if self.concurrency == 0 {
            return Err(Error::config("concurrency must be at least 1"));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::config("retry.max_attempts must be at least 1"));
        }
        Ok(Runner {
            inner: Arc::new(Inner {
                models: self.models,
                retrievers: self.retrievers,
                history: self.history,
                concurrency: self.concurrency,
                retry: self.retry,
                node_timeout: self.node_timeout,
                cache: self.cache.then(|| Mutex::new(HashMap::new())),
            }),
        })
    }
}

/// What a node does, resolved before the run.
enum Work {
    Value(String),
    Generate(Arc<dyn Generator>),
    Rag { pipeline: Arc<Pipeline> },
    Image(Arc<dyn ImageGenerator>),
}

struct Prepared {
    plan: Plan,
    work: Arc<Vec<Work>>,
    run_id: String,
}

fn rag_pipeline(
    inner: &Inner,
    n: &PlanNode,
    rag: &RagNode,
    answerer: RagAnswerer,
    retriever: Arc<dyn Retriever>,
    history: Arc<dyn HistoryStore>,
) -> Result<Arc<Pipeline>> {
    let profile = n
        .profile
        .ok_or_else(|| Error::config(format!("no profile for `{}`", rag.model)))?;
    let mut builder = Pipeline::builder()
        .with_retriever(retriever)
        .with_history(history)
        .with_model_profile(profile)
        .with_retry(inner.retry.clone())
        .with_params(rag.params.params());
    let generator = answerer.generator;
    builder = if let Some(template) = answerer.template {
        builder.with_template(template)
    } else if profile.family == ModelFamily::Claude || generator.accepts() != PromptKind::Chat {
        builder.with_template(rag_core::template_for_profile(&profile))
    } else {
        builder.with_template(
            ChatTemplate::builder()
                .with_tokens(profile.tokens)
                .with_framing(profile.framing)
                .build()?,
        )
    };
    builder = builder.with_generator(generator);
    if let Some(k) = rag.top_k {
        builder = builder.with_top_k(k);
    }
    Ok(Arc::new(builder.build()?))
}

/// A template with its references replaced by the values' texts (images are refused by
/// validation where text is expected).
fn render_text(template: &str, outputs: &BTreeMap<String, Arc<NodeOutput>>) -> Result<String> {
    Ok(render(template, outputs)?.0)
}

/// A template's text, and the images its references put before it; an error when the text
/// would be longer than [`MAX_PROMPT_BYTES`].
fn render(
    template: &str,
    outputs: &BTreeMap<String, Arc<NodeOutput>>,
) -> Result<(String, Vec<Image>)> {
    let mut text = String::with_capacity(template.len().min(MAX_PROMPT_BYTES));
    let mut images = Vec::new();
    let push = |text: &mut String, piece: &str| {
        if text.len() + piece.len() > MAX_PROMPT_BYTES {
            return Err(Error::invalid_input(
                "prompt",
                format!(
                    "the template renders to more than {MAX_PROMPT_BYTES} bytes (its references repeat long values)"
                ),
            ));
        }
        text.push_str(piece);
        Ok(())
    };
    for piece in refs::parse(template).unwrap_or_default() {
        match piece {
            Piece::Text(t) => push(&mut text, t)?,
            Piece::Ref(r) => {
                let Some(output) = outputs.get(&r.node) else {
                    continue;
                };
                match r.field.as_deref() {
                    Some("citations") => push(&mut text, &output.citations_text())?,
                    _ => match &output.image {
                        Some(image) => images.push(image.clone()),
                        None => push(&mut text, &output.text)?,
                    },
                }
            }
        }
    }
    Ok((text, images))
}

/// A user message from a template: its text and images.
fn user_message(template: &str, outputs: &BTreeMap<String, Arc<NodeOutput>>) -> Result<Message> {
    let (text, images) = render(template, outputs)?;
    let mut message = Message::user(text);
    message.images = images;
    Ok(message)
}

/// The cache key of a node: its configuration (without its title) and the outputs of the
/// nodes it references.
fn cache_key(plan: &Plan, n: &PlanNode, outputs: &BTreeMap<String, Arc<NodeOutput>>) -> String {
    let mut config = serde_json::to_value(&n.node).unwrap_or_default();
    if let Some(map) = config.as_object_mut() {
        map.remove("title");
    }
    let deps: Vec<(&str, String)> = n
        .deps
        .iter()
        .map(|&d| {
            let id = plan.nodes()[d].id.as_str();
            (
                id,
                outputs.get(id).map(|o| o.fingerprint()).unwrap_or_default(),
            )
        })
        .collect();
    sha256(
        json!({ "node": config, "inputs": deps })
            .to_string()
            .as_bytes(),
    )
}

/// The run loop: starts every node whose references are done, under the concurrency limit,
/// and passes their events on; ends with one `Finished`.
fn drive(inner: Arc<Inner>, prepared: Prepared) -> impl Stream<Item = RunEvent> + Send {
    async_stream::stream! {
        let started = Instant::now();
        let plan = prepared.plan;
        let nodes = plan.nodes();
        let count = nodes.len();
        let mut waiting: Vec<usize> = nodes.iter().map(|n| n.deps.len()).collect();
        let mut ready: VecDeque<usize> = (0..count).filter(|&i| waiting[i] == 0).collect();
        let mut outputs: BTreeMap<String, Arc<NodeOutput>> = BTreeMap::new();
        let mut report = RunReport::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<RunEvent>();
        let mut running = FuturesUnordered::new();
        let mut settled = 0;
        // Nodes that failed or were skipped, whose dependents are skipped in turn.
        let mut dead: VecDeque<usize> = VecDeque::new();
        while settled < count {
            // Skip what depends on a failure, then start what can start.
            while let Some(i) = dead.pop_front() {
                for &d in &nodes[i].dependents {
                    if report.skipped.insert(nodes[d].id.clone()) {
                        settled += 1;
                        dead.push_back(d);
                        yield RunEvent::Skipped { node: nodes[d].id.clone(), because: nodes[i].id.clone() };
                    }
                }
            }
            while running.len() < inner.concurrency {
                let Some(i) = ready.pop_front() else { break };
                let n = &nodes[i];
                if report.skipped.contains(&n.id) {
                    continue;
                }
                if let Work::Value(value) = &prepared.work[i] {
                    yield RunEvent::Started { node: n.id.clone(), cached: false };
                    let output = Arc::new(NodeOutput::text(value.clone()));
                    outputs.insert(n.id.clone(), output.clone());
                    report.outputs.insert(n.id.clone(), output.clone());
                    yield RunEvent::Done { node: n.id.clone(), output, cached: false };
                    settled += 1;
                    for &d in &n.dependents {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            ready.push_back(d);
                        }
                    }
                    continue;
                }
                let key = inner.cache.as_ref().map(|_| cache_key(&plan, n, &outputs));
                let hit = key.as_ref().and_then(|k| {
                    inner.cache.as_ref().and_then(|c| c.lock().expect("the cache lock").get(k).cloned())
                });
                if let Some(output) = hit {
                    yield RunEvent::Started { node: n.id.clone(), cached: true };
                    outputs.insert(n.id.clone(), output.clone());
                    report.outputs.insert(n.id.clone(), output.clone());
                    report.cached.insert(n.id.clone());
                    yield RunEvent::Done { node: n.id.clone(), output, cached: true };
                    settled += 1;
                    for &d in &n.dependents {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            ready.push_back(d);
                        }
                    }
                    continue;
                }
                yield RunEvent::Started { node: n.id.clone(), cached: false };
                let task = run_node(
                    inner.clone(),
                    plan.clone(),
                    prepared.work.clone(),
                    i,
                    // Only what the node references travels with it.
                    n.deps
                        .iter()
                        .filter_map(|&d| {
                            let id = &nodes[d].id;
                            outputs.get(id).map(|o| (id.clone(), o.clone()))
                        })
                        .collect(),
                    prepared.run_id.clone(),
                    tx.clone(),
                );
                let timeout = inner.node_timeout;
                running.push(async move {
                    let result = match tokio::time::timeout(timeout, task).await {
                        Ok(result) => result,
                        Err(_) => Err(Error::Timeout { stage: Stage::Generation, after: timeout }),
                    };
                    (i, key, result)
                });
            }
            if running.is_empty() {
                if ready.is_empty() && dead.is_empty() {
                    // Nothing can start: unreachable for a checked plan (no cycles).
                    break;
                }
                continue;
            }
            let finished = loop {
                tokio::select! {
                    biased;
                    Some(event) = rx.recv() => yield event,
                    Some(done) = running.next() => break done,
                }
            };
            // The node's events were sent before it returned: pass them on first.
            while let Ok(event) = rx.try_recv() {
                yield event;
            }
            let (i, key, result) = finished;
            let n = &nodes[i];
            settled += 1;
            match result {
                Ok(output) => {
                    let output = Arc::new(output);
                    if let (Some(cache), Some(key)) = (&inner.cache, key) {
                        cache.lock().expect("the cache lock").insert(key, output.clone());
                    }
                    outputs.insert(n.id.clone(), output.clone());
                    report.outputs.insert(n.id.clone(), output.clone());
                    yield RunEvent::Done { node: n.id.clone(), output, cached: false };
                    for &d in &n.dependents {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            ready.push_back(d);
                        }
                    }
                }
                Err(error) => {
                    report.failed.insert(n.id.clone(), error.clone());
                    yield RunEvent::Failed { node: n.id.clone(), error };
                    dead.push_back(i);
                }
            }
        }
        report.elapsed = started.elapsed();
        yield RunEvent::Finished(report);
    }
}

/// Runs one node that calls a model.
async fn run_node(
    inner: Arc<Inner>,
    plan: Plan,
    work: Arc<Vec<Work>>,
    i: usize,
    outputs: BTreeMap<String, Arc<NodeOutput>>,
    run_id: String,
    tx: mpsc::UnboundedSender<RunEvent>,
) -> Result<NodeOutput> {
    let n = &plan.nodes()[i];
    match (&n.node, &work[i]) {
        (
            Node::Generate(GenerateNode {
                prompt,
                system,
                params,
                ..
            }),
            Work::Generate(generator),
        ) => {
            let prompt = Prompt::Chat {
                system: system
                    .as_deref()
                    .map(|s| render_text(s, &outputs))
                    .transpose()?,
                messages: vec![user_message(prompt, &outputs)?],
            };
            generate(
                &inner,
                &n.id,
                generator.as_ref(),
                &prompt,
                &params.params(),
                &tx,
            )
            .await
        }
        (
            Node::Chat(ChatNode {
                system,
                messages,
                params,
                ..
            }),
            Work::Generate(generator),
        ) => {
            let messages: Vec<Message> = messages
                .iter()
                .map(|m| match m.role {
                    rag_core::Role::User => user_message(&m.content, &outputs),
                    rag_core::Role::Assistant => {
                        render_text(&m.content, &outputs).map(Message::assistant)
                    }
                })
                .collect::<Result<_>>()?;
            let prompt = Prompt::Chat {
                system: system
                    .as_deref()
                    .map(|s| render_text(s, &outputs))
                    .transpose()?,
                messages: messages.clone(),
            };
            let mut output = generate(
                &inner,
                &n.id,
                generator.as_ref(),
                &prompt,
                &params.params(),
                &tx,
            )
            .await?;
            let mut conversation = messages;
            conversation.push(Message::assistant(output.text.clone()));
            output.conversation = conversation;
            Ok(output)
        }
        (Node::Rag(RagNode { query, .. }), Work::Rag { pipeline }) => {
            let query = render_text(query, &outputs)?;
            let session = SessionId::new(format!("app.{}.{}.{run_id}", plan.doc().id, n.id))?;
            let mut events = pipeline.ask(Ask::new(session, query));
            let mut citations = Vec::new();
            let mut usage = None;
            while let Some(event) = events.next().await {
                match event {
                    Event::Sources(sources) => {
                        citations = sources.clone();
                        let _ = tx.send(RunEvent::Citations {
                            node: n.id.clone(),
                            citations: sources,
                        });
                    }
                    Event::Token(text) => {
                        let _ = tx.send(RunEvent::Delta {
                            node: n.id.clone(),
                            text,
                        });
                    }
                    Event::Usage(u) => usage = Some(u),
                    Event::Warning(w) => {
                        let _ = tx.send(RunEvent::Warning {
                            node: n.id.clone(),
                            message: w.to_string(),
                        });
                    }
                    Event::Done(summary) => {
                        return Ok(NodeOutput {
                            text: summary.answer,
                            citations,
                            usage: summary.usage.or(usage),
                            stop_reason: summary.stop_reason,
                            ..Default::default()
                        });
                    }
                    Event::Error(failure) => return Err(failure.error),
                    _ => {}
                }
            }
            Err(Error::generation(
                "the pipeline's stream ended without an answer",
                true,
            ))
        }
        (
            Node::Image(ImageNode {
                prompt,
                negative_prompt,
                width,
                height,
                cfg_scale,
                seed,
                ..
            }),
            Work::Image(generator),
        ) => {
            let request = ImageRequest {
                prompt: render_text(prompt, &outputs)?,
                negative_prompt: negative_prompt
                    .as_deref()
                    .map(|n| render_text(n, &outputs))
                    .transpose()?
                    .filter(|n| !n.trim().is_empty()),
                width: *width,
                height: *height,
                cfg_scale: cfg_scale.map(|c| c as f32),
                seed: *seed,
            };
            generator.check(&request)?;
            let mut attempt = 1;
            loop {
                match generator.generate_image(&request).await {
                    Ok(image) => {
                        return Ok(NodeOutput {
                            image: Some(image),
                            ..Default::default()
                        })
                    }
                    Err(e) if e.is_retryable() && attempt < inner.retry.max_attempts => {
                        let _ = tx.send(RunEvent::Warning {
                            node: n.id.clone(),
                            message: format!("attempt {attempt} failed, retrying: {e}"),
                        });
                        tokio::time::sleep(inner.retry.backoff(attempt - 1)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        _ => Err(Error::config(format!(
            "node `{}` has no work resolved for its kind",
            n.id
        ))),
    }
}

/// One model call, streamed, retried as the `Pipeline` retries: only errors that say they are
/// retryable, only before the first token.
async fn generate(
    inner: &Inner,
    node: &str,
    generator: &dyn Generator,
    prompt: &Prompt,
    params: &rag_core::GenerationParams,
    tx: &mpsc::UnboundedSender<RunEvent>,
) -> Result<NodeOutput> {
    let mut attempt = 1;
    loop {
        let failure = match generator.generate(prompt, params).await {
            Err(e) => e,
            Ok(mut stream) => {
                let mut output = NodeOutput::default();
                let mut streamed = false;
                let mut failed = None;
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(Chunk::Text(text)) => {
                            streamed = true;
                            output.text.push_str(&text);
                            let _ = tx.send(RunEvent::Delta {
                                node: node.to_owned(),
                                text,
                            });
                        }
                        Ok(Chunk::Usage(u)) => {
                            let total = output.usage.get_or_insert_with(Usage::default);
                            total.input_tokens += u.input_tokens;
                            total.output_tokens += u.output_tokens;
                        }
                        Ok(Chunk::Stop(reason)) => output.stop_reason = Some(reason),
                        Ok(_) => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    None => return Ok(output),
                    Some(e) if streamed => return Err(e),
                    Some(e) => e,
                }
            }
        };
        if !failure.is_retryable() || attempt >= inner.retry.max_attempts {
            return Err(failure);
        }
        let _ = tx.send(RunEvent::Warning {
            node: node.to_owned(),
            message: format!(
                "attempt {attempt} failed before the first token, retrying: {failure}"
            ),
        });
        tokio::time::sleep(inner.retry.backoff(attempt - 1)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::testing::ScriptedGenerator;

    #[derive(Debug)]
    struct Host(Arc<ScriptedGenerator>);

    impl Models for Host {
        fn generator(&self, _model_id: &str) -> Result<Arc<dyn Generator>> {
            Ok(self.0.clone())
        }
        fn image_generator(&self, model_id: &str) -> Result<Arc<dyn ImageGenerator>> {
            Err(Error::config(format!("no image model {model_id}")))
        }
    }

    #[tokio::test]
    async fn a_template_that_repeats_a_long_value_fails_its_node_without_a_call() {
        // A 1 MiB text referenced five times: a 1 MiB app asking for a 5 MiB prompt.
        let app = serde_json::json!({
            "format": "1.0", "id": "amplify", "name": "Amplify",
            "nodes": {
                "big": {"kind": "text", "text": "x".repeat(1 << 20)},
                "small": {"kind": "text", "text": "short"},
                "huge": {"kind": "generate", "model": "anthropic.claude-3-haiku-20240307-v1:0",
                         "prompt": "{{@big}}".repeat(5)},
                "fine": {"kind": "generate", "model": "anthropic.claude-3-haiku-20240307-v1:0",
                         "prompt": "{{@small}} {{@small}}"}
            }
        });
        let plan = Plan::from_json(&app.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let generator = Arc::new(ScriptedGenerator::new(["ok"]));
        let runner = Runner::builder(Host(generator.clone())).build().unwrap();
        let events: Vec<RunEvent> = runner.run(&plan, &Inputs::new()).unwrap().collect().await;
        let Some(RunEvent::Finished(report)) = events.last() else {
            panic!("no report")
        };
        let error = report.failed.get("huge").expect("the node fails");
        assert!(
            error.to_string().contains("renders to more than"),
            "{error}"
        );
        assert_eq!(report.outputs["fine"].text, "ok");
        assert_eq!(generator.probe().calls(), 1, "only `fine` called its model");
    }

    fn chat_plan() -> Plan {
        let app = serde_json::json!({
            "format": "1.0", "id": "slow", "name": "Slow",
            "nodes": {
                "talk": {"kind": "chat", "model": "anthropic.claude-3-haiku-20240307-v1:0",
                         "messages": [{"role": "user", "content": "hello"}]},
                "after": {"kind": "generate", "model": "anthropic.claude-3-haiku-20240307-v1:0",
                          "prompt": "{{@talk}}"}
            }
        });
        Plan::from_json(&app.to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_over_its_timeout_fails_and_skips_its_dependents() {
        let generator = Arc::new(
            ScriptedGenerator::new(["late"]).with_first_token_delay(Duration::from_secs(5)),
        );
        let runner = Runner::builder(Host(generator))
            .with_node_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let events: Vec<RunEvent> = runner
            .run(&chat_plan(), &Inputs::new())
            .unwrap()
            .collect()
            .await;
        let Some(RunEvent::Finished(report)) = events.last() else {
            panic!("no report")
        };
        assert!(
            matches!(report.failed.get("talk"), Some(Error::Timeout { .. })),
            "{report:?}"
        );
        assert!(report.skipped.contains("after"));
    }

    #[tokio::test(start_paused = true)]
    async fn continuing_a_chat_is_bounded_by_the_node_timeout() {
        let generator = Arc::new(
            ScriptedGenerator::new(["late"]).with_first_token_delay(Duration::from_secs(5)),
        );
        let plan = chat_plan();
        let patient = Runner::builder(Host(generator.clone())).build().unwrap();
        let events: Vec<RunEvent> = patient.run(&plan, &Inputs::new()).unwrap().collect().await;
        let Some(RunEvent::Finished(report)) = events.last() else {
            panic!("no report")
        };
        assert!(report.is_success(), "{report:?}");

        let hasty = Runner::builder(Host(generator))
            .with_node_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let more: Vec<RunEvent> = hasty
            .continue_chat(&plan, report, "talk", "and then?")
            .unwrap()
            .collect()
            .await;
        let Some(RunEvent::Finished(after)) = more.last() else {
            panic!("no report")
        };
        assert!(
            matches!(after.failed.get("talk"), Some(Error::Timeout { .. })),
            "{after:?}"
        );
    }
}
