//! The quickstart: the whole pipeline, offline, on this project's own documentation.
//!
//! ```text
//! cargo run --example quickstart -- "How does the pipeline stream an answer?"
//! cargo run --example quickstart                      # interactive: one question per line
//! cargo run --example quickstart -- --docs ~/notes "What did I write about tantivy?"
//! # A real local model on an OpenAI-compatible server (here Ollama's):
//! cargo run --example quickstart --features openai -- \
//!     --openai-url http://127.0.0.1:11434/v1 --model llama3.2 "How are retries handled?"
//! ```
//!
//! It indexes Markdown and text files in a local tantivy index, answers with the extractive
//! generator (no model, no AWS account), streams the answer to the terminal as it arrives and
//! lists the passages it came from. With `--openai-url URL --model NAME` (and the `openai`
//! feature) a model on an OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio)
//! answers instead, from the same index, with a chat prompt inside `--context-window` tokens
//! (default 8,192; give the server's own). In interactive mode every question goes to the same
//! conversation, whose turns are kept in an in-memory history (`/history` shows them).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use futures::StreamExt;
use rag::memory::{ExtractiveGenerator, ExtractiveTemplate, InMemoryHistory, TantivyRetriever};
use rag::{Ask, Citation, Event, HistoryStore, Pipeline, SessionId};

#[path = "common/docs.rs"]
mod docs;
#[path = "common/openai.rs"]
mod openai;

/// Ask questions about a folder of documents, offline.
#[derive(Debug, Parser)]
#[command(about)]
pub(crate) struct Args {
    /// Index the Markdown and text files under this folder (repeatable) instead of the
    /// project's own documentation.
    #[arg(long, value_name = "DIR")]
    docs: Vec<PathBuf>,
    /// How many passages to retrieve per question.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Answer with a model on the OpenAI-compatible server at this base URL (for example
    /// http://127.0.0.1:11434/v1 for Ollama, http://127.0.0.1:8000/v1 for vLLM) instead of the
    /// extractive generator. Needs --model, and the `openai` feature.
    #[arg(long, value_name = "URL", requires = "model")]
    openai_url: Option<String>,
    /// The model's name on the server (with --openai-url), for example llama3.2.
    #[arg(long, value_name = "NAME", requires = "openai_url")]
    model: Option<String>,
    /// The model's context window in tokens, as the server runs it (with --openai-url;
    /// default 8192).
    #[arg(long, value_name = "N", requires = "openai_url")]
    context_window: Option<usize>,
    /// The longest answer in tokens (with --openai-url).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_tokens: u32,
    /// The key sent as a Bearer token, for servers that ask for one (with --openai-url).
    #[arg(
        long,
        value_name = "KEY",
        env = "OPENAI_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// The question; without one, questions are read from standard input, one per line.
    question: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let stdin = std::io::stdin();
    match run(args, stdin.lock(), &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The quickstart: questions from `args` or, without one, from `input`; answers and sources
/// to `out`, progress to standard error.
pub(crate) async fn run(
    args: Args,
    mut input: impl BufRead,
    out: &mut impl Write,
) -> Result<(), String> {
    let index = TantivyRetriever::in_memory().map_err(|e| e.to_string())?;
    let (files, passages) = docs::index_docs(&index, &args.docs)?;
    eprintln!("Indexed {passages} passages from {files} files.");

    let history = Arc::new(InMemoryHistory::new());
    let builder = Pipeline::builder()
        .with_retriever(index)
        .with_history(Arc::clone(&history))
        .with_top_k(args.top_k);
    let builder = match (&args.openai_url, &args.model) {
        (Some(url), Some(model)) => {
            let local = openai::LocalModel::new(
                url,
                model,
                args.api_key.as_deref(),
                args.context_window,
                args.max_tokens,
            )?;
            let (builder, what) = local.configure(builder)?;
            eprintln!("Answering with {what}.");
            builder
        }
        _ => builder
            .with_template(ExtractiveTemplate::new())
            .with_generator(ExtractiveGenerator::new()),
    };
    let pipeline = builder.build().map_err(|e| e.to_string())?;
    let session = SessionId::new("quickstart").map_err(|e| e.to_string())?;

    if !args.question.is_empty() {
        let question = args.question.join(" ");
        return answer(&pipeline, &session, &question, out).await;
    }

    eprintln!("Ask a question (an empty line or Ctrl-D ends; /history shows the conversation).");
    loop {
        eprint!("> ");
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read standard input: {e}")),
        }
        let question = line.trim();
        match question {
            "" => break,
            "/history" => show_history(&history, &session, out).await?,
            _ => {
                // An error ends this question, not the conversation.
                if let Err(message) = answer(&pipeline, &session, question, out).await {
                    eprintln!("error: {message}");
                }
            }
        }
    }
    pipeline.flush().await;
    Ok(())
}

/// Streams the answer to `question` to `out` as it arrives, then lists its sources.
async fn answer(
    pipeline: &Pipeline,
    session: &SessionId,
    question: &str,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut events = pipeline.ask(Ask::new(session.clone(), question));
    let mut sources: Vec<Citation> = Vec::new();
    write(out, "\n")?;
    while let Some(event) = events.next().await {
        match event {
            Event::Sources(cited) => sources = cited,
            // Each piece is shown as it arrives, not when the line ends.
            Event::Token(token) => write(out, &token)?,
            Event::Warning(warning) => eprintln!("warning: {warning}"),
            Event::Done(_) => write(out, "\n\n")?,
            Event::Error(failure) => {
                write(out, "\n")?;
                return Err(failure.error.to_string());
            }
            _ => {}
        }
    }
    if !sources.is_empty() {
        let mut list = String::from("Sources:\n");
        for source in &sources {
            let title = source.title.as_deref().unwrap_or(&source.passage_id);
            // Local passages are `path#n`: the file and the passage's place in it.
            let place = match &source.uri {
                Some(uri) if source.passage_id.starts_with(uri.as_str()) => &source.passage_id,
                Some(uri) => uri,
                None => &source.passage_id,
            };
            list.push_str(&format!(
                "  [{}] {title} ({})\n",
                source.index,
                docs::shorten(place)
            ));
        }
        list.push('\n');
        write(out, &list)?;
    }
    Ok(())
}

/// Writes `text` to `out` and flushes it.
fn write(out: &mut impl Write, text: &str) -> Result<(), String> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the answer: {e}"))
}

/// Writes the turns the history store kept for `session`.
async fn show_history(
    history: &InMemoryHistory,
    session: &SessionId,
    out: &mut impl Write,
) -> Result<(), String> {
    let turns = history
        .load(session, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    if turns.is_empty() {
        text.push_str("(no turns yet)\n");
    }
    for (i, turn) in turns.iter().enumerate() {
        text.push_str(&format!(
            "{}. Q: {}\n   A: {}\n",
            i + 1,
            turn.question,
            turn.answer
        ));
    }
    write(out, &text)
}
