//! The pipeline's `tracing` spans, as a subscriber sees them: one per ask, one per stage, with
//! the OpenTelemetry GenAI fields and the ask as every stage's parent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rag_core::testing::{
    Delayed, FailingRetriever, PlainTemplate, ScriptedGenerator, StaticRetriever,
};
use rag_core::{
    Ask, Error, Event, HistoryStore, Passage, Pipeline, Result, SessionId, SessionOwner, Turn,
    Usage,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// One span as the subscriber saw it: its fields as given at creation and recorded later.
#[derive(Debug, Clone)]
struct SeenSpan {
    name: &'static str,
    /// The index of the parent in [`Seen::spans`].
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
    /// When it closed, in the order of all closes.
    closed: Option<usize>,
}

impl SeenSpan {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Seen {
    spans: Vec<SeenSpan>,
    /// Live span ids to their index (the registry reuses ids of closed spans).
    live: HashMap<u64, usize>,
    closes: usize,
}

/// A layer that keeps every span with its fields, parent and close order.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    fn spans(&self) -> Vec<SeenSpan> {
        self.0.lock().unwrap().spans.clone()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        let mut seen = self.0.lock().unwrap();
        let parent = parent.and_then(|p| seen.live.get(&p).copied());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let index = seen.spans.len();
        seen.spans.push(SeenSpan {
            name: attrs.metadata().name(),
            parent,
            fields,
            closed: None,
        });
        seen.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(&index) = seen.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.spans[index].fields));
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(index) = seen.live.remove(&id.into_u64()) {
            let order = seen.closes;
            seen.closes += 1;
            seen.spans[index].closed = Some(order);
        }
    }
}

/// A history store in a vector: enough for one session.
#[derive(Debug, Default)]
struct VecHistory(Mutex<Vec<Turn>>);

#[async_trait]
impl HistoryStore for VecHistory {
    async fn load(&self, _session: &SessionId, max_turns: usize) -> Result<Vec<Turn>> {
        let turns = self.0.lock().unwrap();
        Ok(turns[turns.len().saturating_sub(max_turns)..].to_vec())
    }

    async fn append(&self, _session: &SessionId, turn: &Turn) -> Result<()> {
        let mut turns = self.0.lock().unwrap();
        if !turns.iter().any(|t| t.id == turn.id) {
            turns.push(turn.clone());
        }
        Ok(())
    }

    async fn clear(&self, _session: &SessionId) -> Result<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }

    async fn owner(&self, _session: &SessionId) -> Result<SessionOwner> {
        Ok(SessionOwner::Anonymous)
    }
}

fn recording() -> (Recorder, tracing::subscriber::DefaultGuard) {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    (recorder, tracing::subscriber::set_default(subscriber))
}

fn passages() -> Vec<Passage> {
    vec![
        Passage::new("doc-1", "Lambda runs code without servers.").with_score(0.75),
        Passage::new("doc-2", "Lambda bills by the millisecond.").with_score(0.5),
    ]
}

fn history_with_one_turn() -> VecHistory {
    let history = VecHistory::default();
    history
        .0
        .lock()
        .unwrap()
        .push(Turn::new("What is AWS?", "A cloud."));
    history
}

fn the<'a>(spans: &'a [SeenSpan], name: &str) -> &'a SeenSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

fn index_of(spans: &[SeenSpan], name: &str) -> usize {
    spans.iter().position(|s| s.name == name).unwrap()
}

async fn run(pipeline: &Pipeline, question: &str) -> Vec<Event> {
    let session = SessionId::new("s-trace").unwrap();
    pipeline.ask(Ask::new(session, question)).collect().await
}

#[tokio::test]
async fn every_stage_is_a_child_of_the_ask_with_its_genai_fields() {
    let (recorder, _guard) = recording();
    let generator = ScriptedGenerator::counting(40)
        .with_usage(Usage::new(100, 40).with_cache(30, 5))
        .with_model("aws.bedrock", MODEL);
    let pipeline = Pipeline::builder()
        .with_generator(generator)
        .with_template(PlainTemplate::default())
        .with_retriever(StaticRetriever::new(passages()))
        .with_history(history_with_one_turn())
        .build()
        .unwrap();

    let events = run(&pipeline, "What is Lambda?").await;
    let Some(Event::Done(summary)) = events.last() else {
        panic!("the ask ended with {:?}", events.last());
    };
    assert!(summary.saved);
    let spans = recorder.spans();

    // One span per ask and per stage, none per token (40 tokens were streamed).
    let names: Vec<_> = spans.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "rag.ask",
            "rag.history",
            "rag.retrieval",
            "rag.prompt",
            "rag.generation",
            "rag.save"
        ]
    );
    let ask = the(&spans, "rag.ask");
    assert_eq!(ask.parent, None);
    assert_eq!(ask.field("gen_ai.conversation.id"), Some("s-trace"));
    let turn_id = summary.turn_id.to_string();
    assert_eq!(ask.field("rag.turn.id"), Some(turn_id.as_str()));
    assert_eq!(ask.field("rag.saved"), Some("true"));
    assert_eq!(ask.field("error.type"), None);
    let ask_index = index_of(&spans, "rag.ask");
    for stage in &spans[1..] {
        assert_eq!(
            stage.parent,
            Some(ask_index),
            "{} is the ask's child",
            stage.name
        );
        assert!(stage.closed.is_some(), "{} closed", stage.name);
        assert_eq!(
            stage.field("error.type"),
            None,
            "{} did not fail",
            stage.name
        );
    }
    assert!(
        ask.closed.is_some(),
        "the ask's span closed at its Done event"
    );

    let history = the(&spans, "rag.history");
    assert_eq!(history.field("otel.name"), Some("search_memory"));
    assert_eq!(
        history.field("gen_ai.operation.name"),
        Some("search_memory")
    );
    assert_eq!(history.field("gen_ai.memory.record.count"), Some("1"));

    let retrieval = the(&spans, "rag.retrieval");
    assert_eq!(retrieval.field("otel.name"), Some("retrieval"));
    assert_eq!(retrieval.field("otel.kind"), Some("client"));
    assert_eq!(retrieval.field("gen_ai.operation.name"), Some("retrieval"));
    assert_eq!(retrieval.field("gen_ai.request.top_k"), Some("10.0"));
    assert_eq!(retrieval.field("rag.retrieval.document_count"), Some("2"));
    let documents: serde_json::Value =
        serde_json::from_str(retrieval.field("gen_ai.retrieval.documents").unwrap()).unwrap();
    assert_eq!(
        documents,
        serde_json::json!([{"id": "doc-1", "score": 0.75}, {"id": "doc-2", "score": 0.5}])
    );

    let prompt = the(&spans, "rag.prompt");
    assert_eq!(
        prompt.field("rag.prompt.tokens"),
        Some(summary.prompt_tokens.to_string().as_str())
    );
    assert_eq!(prompt.field("rag.prompt.passages_kept"), Some("2"));
    assert_eq!(prompt.field("rag.prompt.turns_kept"), Some("1"));
    assert_eq!(prompt.field("rag.prompt.turns_dropped"), Some("0"));

    let generation = the(&spans, "rag.generation");
    let expect = [
        ("otel.name", format!("text_completion {MODEL}")),
        ("otel.kind", "client".into()),
        ("gen_ai.operation.name", "text_completion".into()),
        ("gen_ai.provider.name", "aws.bedrock".into()),
        ("gen_ai.request.model", MODEL.into()),
        ("gen_ai.request.max_tokens", "1024".into()),
        ("gen_ai.request.stream", "true".into()),
        // Cached tokens included, as the conventions want.
        ("gen_ai.usage.input_tokens", "135".into()),
        ("gen_ai.usage.output_tokens", "40".into()),
        ("gen_ai.usage.cache_read.input_tokens", "30".into()),
        ("gen_ai.usage.cache_creation.input_tokens", "5".into()),
        ("gen_ai.response.finish_reasons", r#"["end_turn"]"#.into()),
        ("rag.generation.attempts", "1".into()),
    ];
    for (field, value) in expect {
        assert_eq!(generation.field(field), Some(value.as_str()), "{field}");
    }
    let first_chunk: f64 = generation
        .field("gen_ai.response.time_to_first_chunk")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..10.0).contains(&first_chunk));

    let save = the(&spans, "rag.save");
    assert_eq!(save.field("otel.name"), Some("create_memory"));
    assert_eq!(save.field("gen_ai.operation.name"), Some("create_memory"));
    assert_eq!(
        save.field("gen_ai.memory.record.id"),
        Some(turn_id.as_str())
    );
    assert_eq!(save.field("gen_ai.memory.record.count"), Some("1"));
}

#[tokio::test]
async fn a_chat_prompt_is_a_chat_span_and_an_unnamed_model_leaves_the_model_out() {
    let (recorder, _guard) = recording();
    // The Claude Messages template renders a chat prompt.
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["Hi."]))
        .with_template(rag_core::ClaudeMessagesTemplate::new())
        .build()
        .unwrap();
    let events = run(&pipeline, "Hello?").await;
    assert!(matches!(events.last(), Some(Event::Done(_))));
    let spans = recorder.spans();
    let generation = the(&spans, "rag.generation");
    assert_eq!(generation.field("gen_ai.operation.name"), Some("chat"));
    assert_eq!(generation.field("otel.name"), Some("chat"));
    assert_eq!(generation.field("gen_ai.request.model"), None);
    assert_eq!(generation.field("gen_ai.provider.name"), None);
    // No usage reported, none recorded.
    assert_eq!(generation.field("gen_ai.usage.input_tokens"), None);
    // Stages without a backend have no span.
    let names: Vec<_> = spans.iter().map(|s| s.name).collect();
    assert_eq!(names, ["rag.ask", "rag.prompt", "rag.generation"]);
    assert!(spans[1..].iter().all(|s| s.parent == Some(0)));
}

#[tokio::test]
async fn a_failed_retrieval_records_its_error_on_the_retrieval_and_the_ask() {
    let (recorder, _guard) = recording();
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["never"]).with_model("aws.bedrock", MODEL))
        .with_template(PlainTemplate::default())
        .with_retriever(FailingRetriever::new(Error::retrieval(
            "index offline",
            true,
        )))
        .with_history(VecHistory::default())
        .build()
        .unwrap();

    let events = run(&pipeline, "What is Lambda?").await;
    assert!(matches!(events.last(), Some(Event::Error(_))));
    let spans = recorder.spans();
    let names: Vec<_> = spans.iter().map(|s| s.name).collect();
    // No model call, no save.
    assert_eq!(names, ["rag.ask", "rag.history", "rag.retrieval"]);
    assert!(spans[1..].iter().all(|s| s.parent == Some(0)));

    let retrieval = the(&spans, "rag.retrieval");
    assert_eq!(retrieval.field("error.type"), Some("retrieval"));
    assert_eq!(retrieval.field("otel.status_code"), Some("ERROR"));
    assert_eq!(
        retrieval.field("otel.status_description"),
        Some("retrieval failed: index offline")
    );
    assert_eq!(retrieval.field("gen_ai.retrieval.documents"), None);
    assert_eq!(the(&spans, "rag.history").field("error.type"), None);

    let ask = the(&spans, "rag.ask");
    assert_eq!(ask.field("error.type"), Some("retrieval"));
    assert_eq!(ask.field("rag.error.stage"), Some("retrieval"));
    assert_eq!(ask.field("otel.status_code"), Some("ERROR"));
    assert_eq!(ask.field("rag.turn.id"), None);
    assert!(spans.iter().all(|s| s.closed.is_some()));
}

#[tokio::test]
async fn a_model_failing_midway_records_the_error_on_the_generation() {
    let (recorder, _guard) = recording();
    let pipeline = Pipeline::builder()
        .with_generator(
            ScriptedGenerator::counting(5).fail_at(3, Error::generation("stream reset", false)),
        )
        .with_template(PlainTemplate::default())
        .build()
        .unwrap();

    let events = run(&pipeline, "What is Lambda?").await;
    assert!(matches!(events.last(), Some(Event::Error(_))));
    let spans = recorder.spans();
    let generation = the(&spans, "rag.generation");
    assert_eq!(generation.field("error.type"), Some("generation"));
    assert_eq!(generation.field("rag.generation.attempts"), Some("1"));
    assert_eq!(generation.field("gen_ai.response.finish_reasons"), None);
    assert_eq!(generation.parent, Some(index_of(&spans, "rag.ask")));
    let ask = the(&spans, "rag.ask");
    assert_eq!(ask.field("rag.error.stage"), Some("generation"));
    assert!(spans.iter().all(|s| s.closed.is_some()));
}

#[tokio::test]
async fn a_save_finished_in_the_background_stays_the_asks_child() {
    let (recorder, _guard) = recording();
    let history = Delayed::new(VecHistory::default(), Duration::ZERO)
        .with_write_delay(Duration::from_millis(50));
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::new(["Lambda ", "runs."]).with_usage(Usage::new(9, 2)))
        .with_template(PlainTemplate::default())
        .with_history(history)
        .build()
        .unwrap();

    // Leave at the usage event: the save is armed and moves into a background task.
    let mut events = pipeline.ask(Ask::new(SessionId::new("s-trace").unwrap(), "Lambda?"));
    while let Some(event) = events.next().await {
        if matches!(event, Event::Usage(_)) {
            break;
        }
    }
    drop(events);
    assert_eq!(pipeline.background_tasks(), 1, "the save went on in a task");
    pipeline.flush().await;

    let spans = recorder.spans();
    let save = the(&spans, "rag.save");
    let ask = the(&spans, "rag.ask");
    assert_eq!(save.parent, Some(index_of(&spans, "rag.ask")));
    assert_eq!(save.field("error.type"), None);
    let (save_closed, ask_closed) = (save.closed.unwrap(), ask.closed.unwrap());
    assert!(
        ask_closed > save_closed,
        "the ask's span lasts until its save ends"
    );
    let generation = the(&spans, "rag.generation");
    assert_eq!(generation.field("gen_ai.usage.input_tokens"), Some("9"));
}
