//! A WebSocket chat service in the shape of the reference architecture, on axum.
//!
//! ```text
//! cargo run --example websocket                       # offline: local index, extractive answers
//! cargo run --example websocket -- --token s3cret     # clients must send the bearer token
//! cargo run --example websocket --features full -- \
//!     --model anthropic.claude-3-haiku-20240307-v1:0 --retriever kendra --kendra-index ID \
//!     --history dynamodb --table chat-history --region us-east-1
//! ```
//!
//! Open `http://127.0.0.1:8080/` for a small page that streams the Markdown answers, or connect
//! to `ws://127.0.0.1:8080/ws` and send `{"data":{"message":"..."},"timestamp":0}`. The
//! protocol is described in `app.rs`. The first line on standard output is
//! `listening on http://ADDR`, so a script can start it on port 0 and read the port.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

mod app;
#[path = "../common/backend.rs"]
mod backend;
#[path = "../common/docs.rs"]
mod docs;

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
    let router = app::router(app::AppState {
        pipeline: built.pipeline,
        token: args.token,
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    // Let the last turns reach the history before the process ends.
    pipeline.flush().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the server stopped: {e}");
            ExitCode::FAILURE
        }
    }
}
