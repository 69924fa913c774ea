//! The quickstart: the whole pipeline, offline, on this project's own documentation.
//!
//! ```text
//! cargo run --example quickstart -- "How does the pipeline stream an answer?"
//! cargo run --example quickstart                      # interactive: one question per line
//! cargo run --example quickstart -- --docs ~/notes "What did I write about tantivy?"
//! ```
//!
//! It indexes Markdown and text files in a local tantivy index, answers with the extractive
//! generator (no model, no AWS account), streams the answer to the terminal as it arrives and
//! lists the passages it came from. In interactive mode every question goes to the same
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

/// Ask questions about a folder of documents, offline.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Index the Markdown and text files under this folder (repeatable) instead of the
    /// project's own documentation.
    #[arg(long, value_name = "DIR")]
    docs: Vec<PathBuf>,
    /// How many passages to retrieve per question.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// The question; without one, questions are read from standard input, one per line.
    question: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let index = TantivyRetriever::in_memory().map_err(|e| e.to_string())?;
    let (files, passages) = docs::index_docs(&index, &args.docs)?;
    eprintln!("Indexed {passages} passages from {files} files.");

    let history = Arc::new(InMemoryHistory::new());
    let pipeline = Pipeline::builder()
        .with_retriever(index)
        .with_history(Arc::clone(&history))
        .with_template(ExtractiveTemplate::new())
        .with_generator(ExtractiveGenerator::new())
        .with_top_k(args.top_k)
        .build()
        .map_err(|e| e.to_string())?;
    let session = SessionId::new("quickstart").map_err(|e| e.to_string())?;

    if !args.question.is_empty() {
        let question = args.question.join(" ");
        return answer(&pipeline, &session, &question).await;
    }

    eprintln!("Ask a question (an empty line or Ctrl-D ends; /history shows the conversation).");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read standard input: {e}")),
        }
        let question = line.trim();
        match question {
            "" => break,
            "/history" => show_history(&history, &session).await?,
            _ => {
                // An error ends this question, not the conversation.
                if let Err(message) = answer(&pipeline, &session, question).await {
                    eprintln!("error: {message}");
                }
            }
        }
    }
    pipeline.flush().await;
    Ok(())
}

/// Streams the answer to `question` to standard output, then lists its sources.
async fn answer(
    pipeline: &Pipeline,
    session: &SessionId,
    question: &str,
) -> Result<(), String> {
    let mut events = pipeline.ask(Ask::new(session.clone(), question));
    let mut sources: Vec<Citation> = Vec::new();
    let mut stdout = std::io::stdout();
    println!();
    while let Some(event) = events.next().await {
        match event {
            Event::Sources(cited) => sources = cited,
            Event::Token(token) => {
                print!("{token}");
                // Show each piece as it arrives rather than when the line ends.
                let _ = stdout.flush();
            }
            Event::Warning(warning) => eprintln!("warning: {warning}"),
            Event::Done(_) => println!("\n"),
            Event::Error(failure) => {
                println!();
                return Err(failure.error.to_string());
            }
            _ => {}
        }
    }
    if !sources.is_empty() {
        println!("Sources:");
        for source in &sources {
            let title = source.title.as_deref().unwrap_or(&source.passage_id);
            match &source.uri {
                Some(uri) => println!("  [{}] {title} ({})", source.index, docs::shorten(uri)),
                None => println!("  [{}] {title}", source.index),
            }
        }
        println!();
    }
    Ok(())
}

/// Prints the turns the history store kept for `session`.
async fn show_history(history: &InMemoryHistory, session: &SessionId) -> Result<(), String> {
    let turns = history
        .load(session, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    if turns.is_empty() {
        println!("(no turns yet)");
    }
    for (i, turn) in turns.iter().enumerate() {
        println!("{}. Q: {}\n   A: {}", i + 1, turn.question, turn.answer);
    }
    Ok(())
}
