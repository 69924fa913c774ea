//! A WebSocket chat service in the shape of the reference architecture, on axum.
//!
//! ```text
//! cargo run --example websocket                       # offline: local index, extractive answers
//! cargo run --example websocket -- --token s3cret     # clients must send the bearer token
//! cargo run --example websocket --features full -- \
//!     --model anthropic.claude-3-haiku-20240307-v1:0 --retriever kendra --kendra-index ID \
//!     --history dynamodb --table chat-history --region us-east-1
//! cargo run --example websocket --features openai -- \
//!     --openai-url http://127.0.0.1:11434/v1 --model llama3.2   # a local model, no AWS
//! ```
//!
//! Open `http://127.0.0.1:8080/` for a small page that streams the Markdown answers, or connect
//! to `ws://127.0.0.1:8080/ws` and send `{"data":{"message":"..."},"timestamp":0}`. The
//! protocol is described in `app.rs`. The first line on standard output is
//! `listening on http://ADDR`, so a script can start it on port 0 and read the port.
//!
//! On Ctrl-C or SIGTERM it stops taking connections, lets the answers being streamed finish
//! (up to `--shutdown-grace` seconds), tells clients that ask meanwhile to ask again, closes
//! the connections with 1001 "going away", waits for the last turns to be saved, and says on
//! standard error what, if anything, was left unfinished (exit code 1 when something was).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

mod app;
#[path = "../common/backend.rs"]
mod backend;
#[path = "../common/docs.rs"]
mod docs;
#[path = "../common/openai.rs"]
mod openai;

/// Serve the RAG pipeline over WebSocket.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// A bearer token that clients must send to connect (`Authorization: Bearer TOKEN`, or
    /// `?access_token=TOKEN` from a browser).
    #[arg(long, env = "RAG_WS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// On Ctrl-C or SIGTERM, how long the answers being streamed, and the turn saves after
    /// them, may take before the server exits anyway.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    shutdown_grace: u64,
    #[command(flatten)]
    backend: backend::BackendArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.token.as_deref().is_some_and(str::is_empty) {
        eprintln!("error: the token is empty");
        return ExitCode::from(2);
    }
    let built = match args.backend.build().await {
        Ok(built) => built,
        Err(fatal) => {
            eprintln!("error: {}", fatal.message);
            return ExitCode::from(fatal.code);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    println!("listening on http://{addr}");
    eprintln!("pipeline: {}", built.description);
    if args.token.is_none() && !addr.ip().is_loopback() {
        eprintln!("warning: no --token: anyone who reaches {addr} can use the service");
    }
    let pipeline = built.pipeline.clone();
    let (shutdown, signal) = app::Shutdown::new();
    let router = app::router(app::AppState {
        pipeline: built.pipeline,
        token: args.token,
        shutdown: signal,
    });
    // axum stops accepting as soon as the shutdown begins; the WebSocket connections it has
    // handed off are the shutdown's to finish.
    let mut server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.begun())
            .into_future(),
    );
    let failed = tokio::select! {
        () = stop_requested() => None,
        // The server ended by itself; the connections it handed off may still be answering.
        served = &mut server => Some(match served {
            Ok(Ok(())) => "the server stopped".to_string(),
            Ok(Err(e)) => format!("the server stopped: {e}"),
            Err(e) => format!("the server task ended: {e}"),
        }),
    };
    if let Some(message) = &failed {
        eprintln!("error: {message}");
    }
    let grace = Duration::from_secs(args.shutdown_grace);
    eprintln!(
        "shutting down: finishing the answers in progress (at most {} s)",
        args.shutdown_grace
    );
    let started = tokio::time::Instant::now();
    let stopped = shutdown.run(&pipeline, grace).await;
    eprintln!("{}", stopped.summary());
    if failed.is_some() {
        return ExitCode::FAILURE;
    }
    // Plain HTTP requests (the page) still being served get what is left of the grace; the
    // process ends after that whatever they do.
    let left = grace.saturating_sub(started.elapsed());
    if let Ok(Ok(Err(e))) = tokio::time::timeout(left, server).await {
        eprintln!("error: the server stopped: {e}");
        return ExitCode::FAILURE;
    }
    if stopped.completed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Resolves on Ctrl-C, or on SIGTERM (what service managers and container runtimes send).
async fn stop_requested() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a handler there is no Ctrl-C to wait for.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
