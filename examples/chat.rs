//! A chat in the terminal on Amazon Bedrock, with Kendra, a knowledge base or a local index,
//! and the history in memory or in DynamoDB.
//!
//! ```text
//! cargo run --example chat --features full -- --region us-east-1
//! cargo run --example chat --features full -- \
//!     --model us.meta.llama3-3-70b-instruct-v1:0 --retriever kendra --kendra-index ID \
//!     --history dynamodb --table chat-history --create-table "What is Lambda?"
//! cargo run --example chat --features full -- --model amazon.nova-lite-v1:0 --converse \
//!     --retriever kb --knowledge-base KB12345678
//! cargo run --example chat --features full -- \
//!     --openai-url http://127.0.0.1:11434/v1 --model llama3.2   # a local model, no AWS
//! ```
//!
//! The model family, and so the prompt format, comes from `--model`; `--converse` calls
//! ConverseStream, which takes one chat format for any chat model. A model the library's table
//! does not list (a custom or imported one) needs `--context-window N`, its window in tokens,
//! and is called through ConverseStream; for a listed model the flag replaces the table's
//! window. Before the first question
//! it checks that the AWS environment has a region and credentials, and says plainly what is
//! missing (exit code 2). The answer (Markdown) is printed as it streams, then its sources.
//! `--session ID` resumes a conversation, which with `--history dynamodb` outlives the process.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Parser;
use futures::StreamExt;
use rag::{Ask, Citation, Event, Pipeline, SessionId};

#[path = "common/backend.rs"]
mod backend;
#[path = "common/docs.rs"]
mod docs;
#[path = "common/openai.rs"]
mod openai;

/// The model used when `--model` is not given.
const DEFAULT_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

/// Chat with documents through a model on Amazon Bedrock.
#[derive(Debug, Parser)]
#[command(
    about,
    after_help = "Without --model (and without --openai-url) the model is \
                  anthropic.claude-3-haiku-20240307-v1:0."
)]
pub(crate) struct Args {
    #[command(flatten)]
    backend: backend::BackendArgs,
    /// The conversation to continue (default: a new one).
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// The question; without one, questions are read from standard input, one per line.
    question: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    ExitCode::from(chat(Args::parse()).await)
}

/// The chat; returns the exit code: 0 when every answer arrived, 1 when an answer failed,
/// 2 for configuration, credentials and region problems.
pub(crate) async fn chat(mut args: Args) -> u8 {
    // The default is a Bedrock model; a model on an --openai-url server must be named.
    if args.backend.model.is_none() && args.backend.openai_url.is_none() {
        args.backend.model = Some(DEFAULT_MODEL.to_string());
    }
    let session = match &args.session {
        Some(id) => SessionId::new(id.clone()),
        None => SessionId::new(format!("chat-{}", uuid::Uuid::now_v7())),
    };
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let built = match args.backend.build().await {
        Ok(built) => built,
        Err(fatal) => {
            eprintln!("error: {}", fatal.message);
            return fatal.code;
        }
    };
    eprintln!("Using {}.", built.description);
    eprintln!("Conversation {session} (resume it with --session {session}).");
    let pipeline = built.pipeline;

    let code = if args.question.is_empty() {
        interactive(&pipeline, &session).await
    } else {
        match answer(&pipeline, &session, &args.question.join(" ")).await {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("error: {message}");
                1
            }
        }
    };
    pipeline.flush().await;
    code
}

async fn interactive(pipeline: &Pipeline, session: &SessionId) -> u8 {
    eprintln!("Ask a question (an empty line or Ctrl-D ends).");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: cannot read standard input: {e}");
                return 1;
            }
        }
        let question = line.trim();
        if question.is_empty() {
            return 0;
        }
        if let Err(message) = answer(pipeline, session, question).await {
            eprintln!("error: {message}");
        }
    }
}

/// Streams the answer to standard output as it arrives, then its sources.
async fn answer(pipeline: &Pipeline, session: &SessionId, question: &str) -> Result<(), String> {
    let mut events = pipeline.ask(Ask::new(session.clone(), question));
    let mut sources: Vec<Citation> = Vec::new();
    let mut stdout = std::io::stdout();
    println!();
    while let Some(event) = events.next().await {
        match event {
            Event::Sources(cited) => sources = cited,
            Event::Token(token) => {
                print!("{token}");
                let _ = stdout.flush();
            }
            Event::Warning(warning) => eprintln!("\nwarning: {warning}"),
            Event::Done(_) => println!("\n"),
            Event::Error(failure) => {
                if !failure.partial_answer.is_empty() {
                    println!("\n[the answer was cut off]");
                }
                let again = if failure.is_retryable() {
                    "\n(asking again may work)"
                } else {
                    ""
                };
                return Err(format!("{}{again}", backend::explain(&failure.error)));
            }
            _ => {}
        }
    }
    if !sources.is_empty() {
        println!("Sources:");
        for source in &sources {
            let title = source.title.as_deref().unwrap_or(&source.passage_id);
            // Local passages are `path#n`: the file and the passage's place in it.
            let place = match &source.uri {
                Some(uri) if source.passage_id.starts_with(uri.as_str()) => &source.passage_id,
                Some(uri) => uri,
                None => &source.passage_id,
            };
            println!("  [{}] {title} ({})", source.index, docs::shorten(place));
        }
        println!();
    }
    Ok(())
}
