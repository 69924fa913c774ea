//! A WebSocket chat service in the shape of the reference architecture, on axum.
//!
//! ```text
//! cargo run --example websocket                       # offline: local index, extractive answers
//! cargo run --example websocket -- --token s3cret     # clients must send the shared token
//! cargo run --example websocket -- --cognito-user-pool-id us-east-1_AbC123 \
//!     --cognito-client-id 4example5client6id --token-use id \
//!     --allowed-origin https://chat.example.com       # Cognito users, each with their own history
//! cargo run --example websocket --features full -- \
//!     --model anthropic.claude-3-haiku-20240307-v1:0 --retriever kendra --kendra-index ID \
//!     --history dynamodb --table chat-history --region us-east-1
//! cargo run --example websocket --features openai -- \
//!     --openai-url http://127.0.0.1:11434/v1 --model llama3.2   # a local model, no AWS
//! ```
//!
//! Open `http://127.0.0.1:8080/` for a small page that streams the Markdown answers, or connect
//! to `ws://127.0.0.1:8080/ws` and send `{"data":{"message":"...","id":"q1"},"timestamp":0}`.
//! The protocol is described in `app.rs`: browsers offer the subprotocols `rag.v1` and
//! `bearer.TOKEN`, other clients send `Authorization: Bearer TOKEN`; a token in the URL is
//! refused. Without a token, only browser pages on loopback may connect (`--allowed-origin`
//! lists others). The first line on standard output is `listening on http://ADDR`, so a script
//! can start it on port 0 and read the port.
//!
//! Identity: `--token` is one shared token for local use (every holder is the owner `shared`);
//! `--cognito-user-pool-id` (its region from the id, or `--cognito-region`) or `--jwks-url`
//! with `--issuer` verify RS256 JWTs, and each user (`sub`) owns their conversations. With
//! `--group-attribute groups`, a user sees the documents whose `groups` attribute holds one of
//! the token's `cognito:groups` or a `--public-group` value (default `public`); documents
//! without the attribute are hidden. Errors reach clients in plain words with a request id; the
//! backend's own message is logged on standard error with that id.
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

use app::access::{GroupAccess, Origins, SourceRoots};
use app::auth::{Auth, JwtConfig, JwtVerifier, TokenUseArg};
use app::limits::Limits;

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
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// A page origin allowed to connect (repeatable), such as https://chat.example.com.
    /// Default: pages on loopback (localhost, 127.0.0.1, [::1]) only.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Filter documents by this attribute: a user sees the documents whose attribute holds
    /// one of their groups (the token's cognito:groups) or a --public-group value.
    #[arg(long, value_name = "NAME")]
    group_attribute: Option<String>,
    /// An attribute value everyone may see, with --group-attribute (repeatable; default
    /// `public`).
    #[arg(
        long = "public-group",
        value_name = "VALUE",
        requires = "group_attribute"
    )]
    public_groups: Vec<String>,
    /// On Ctrl-C or SIGTERM, how long the answers being streamed, and the turn saves after
    /// them, may take before the server exits anyway.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    shutdown_grace: u64,
    /// Log each span of the pipeline (`rag.ask` and its stages, with their OpenTelemetry
    /// GenAI fields) on standard error when it closes. `RUST_LOG` (targets and levels, such
    /// as `info` or `rag_core=info,warn`) chooses what is logged; docs/tracing.md shows how to
    /// export the spans with OpenTelemetry instead.
    #[arg(long, env = "RAG_LOG_SPANS")]
    log_spans: bool,
    #[command(flatten)]
    backend: backend::BackendArgs,
}

/// Who may connect.
#[derive(Debug, Clone, clap::Args)]
struct AuthArgs {
    /// One token shared by every client, for local use (clients send it as the subprotocol
    /// bearer.TOKEN or as Authorization: Bearer TOKEN).
    #[arg(long, env = "RAG_WS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Verify JWTs from this Amazon Cognito user pool (for example us-east-1_AbC123).
    #[arg(long, value_name = "ID", conflicts_with_all = ["token", "jwks_url"])]
    cognito_user_pool_id: Option<String>,
    /// The user pool's region (default: the region the pool id starts with).
    #[arg(long, value_name = "REGION", requires = "cognito_user_pool_id")]
    cognito_region: Option<String>,
    /// Verify JWTs with the keys at this JWKS URL (any OIDC provider signing with RS256).
    #[arg(
        long,
        value_name = "URL",
        requires = "issuer",
        conflicts_with = "token"
    )]
    jwks_url: Option<String>,
    /// The `iss` that tokens must carry, with --jwks-url.
    #[arg(long, value_name = "URL", requires = "jwks_url")]
    issuer: Option<String>,
    /// An app client id whose tokens are accepted (repeatable): `aud` of id tokens,
    /// `client_id` of access tokens.
    #[arg(long = "cognito-client-id", value_name = "ID")]
    client_ids: Vec<String>,
    /// Which tokens are accepted.
    #[arg(long, value_enum, default_value_t = TokenUseArg::Id)]
    token_use: TokenUseArg,
}

impl AuthArgs {
    /// The upgrade's guard these flags describe.
    fn auth(&self) -> Result<Auth, String> {
        let jwt = match (&self.cognito_user_pool_id, &self.jwks_url, &self.issuer) {
            (Some(pool), _, _) => {
                let region = match &self.cognito_region {
                    Some(region) => region.clone(),
                    None => match pool.split_once('_') {
                        Some((region, _)) if !region.is_empty() => region.to_string(),
                        _ => {
                            return Err(format!(
                                "`{pool}` does not start with its region (REGION_ID); pass \
                                 --cognito-region"
                            ))
                        }
                    },
                };
                Some(JwtConfig::cognito(
                    &region,
                    pool,
                    self.client_ids.clone(),
                    self.token_use.into(),
                ))
            }
            (None, Some(jwks_url), Some(issuer)) => {
                let mut config =
                    JwtConfig::cognito("", "", self.client_ids.clone(), self.token_use.into());
                config.jwks_url = jwks_url.clone();
                config.issuer = issuer.clone();
                Some(config)
            }
            _ => None,
        };
        match (jwt, &self.token) {
            (Some(config), _) => {
                if self.client_ids.is_empty() {
                    return Err(
                        "verifying JWTs needs at least one --cognito-client-id (the app client)"
                            .into(),
                    );
                }
                let verifier = JwtVerifier::new(config).map_err(|e| e.to_string())?;
                Ok(Auth::Jwt(std::sync::Arc::new(verifier)))
            }
            (None, _) if !self.client_ids.is_empty() => Err(
                "--cognito-client-id needs --cognito-user-pool-id, or --jwks-url with --issuer"
                    .into(),
            ),
            (None, Some(token)) if token.is_empty() => Err("the token is empty".into()),
            (None, Some(token)) => Ok(Auth::Shared(token.clone())),
            (None, None) => Ok(Auth::None),
        }
    }
}

/// The bounds on the service's inputs.
#[derive(Debug, Clone, clap::Args)]
struct LimitArgs {
    /// The largest message answered; larger ones get an error frame "the payload was too
    /// large" (default: 32 KiB, API Gateway's WebSocket frame size). The WebSocket layer cuts
    /// off messages over four times this and closes the connection.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Connections open at once; more are refused with 503.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Connections open at once from one client address; more are refused with 429.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections_per_client)]
    max_connections_per_client: usize,
    /// Questions answered at once for one user across their connections; more get an error
    /// frame.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_asks_per_user)]
    max_asks_per_user: usize,
    /// Questions a connection may queue while one is answered.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_queued_questions)]
    max_queued_questions: usize,
    /// Close a connection that sent nothing for this long while no answer streamed.
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
}

impl LimitArgs {
    fn limits(&self) -> Result<Limits, String> {
        let limits = Limits {
            max_message_bytes: self.max_message_bytes,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_asks_per_user: self.max_asks_per_user,
            max_queued_questions: self.max_queued_questions,
            idle_timeout: Duration::from_secs(self.idle_timeout),
        };
        for (value, flag) in [
            (limits.max_message_bytes, "--max-message-bytes"),
            (limits.max_connections, "--max-connections"),
            (
                limits.max_connections_per_client,
                "--max-connections-per-client",
            ),
            (limits.max_asks_per_user, "--max-asks-per-user"),
            (self.idle_timeout as usize, "--idle-timeout"),
        ] {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        Ok(limits)
    }
}

/// Logs on standard error, filtered by `RUST_LOG` (default `info`); with `spans`, every span
/// as it closes, with its fields and how long it ran.
fn init_logging(spans: bool) -> Result<(), tracing_subscriber::filter::ParseError> {
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter: tracing_subscriber::filter::Targets = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => directives.parse()?,
        _ => tracing_subscriber::filter::Targets::new()
            .with_default(tracing_subscriber::filter::LevelFilter::INFO),
    };
    let events = if spans { FmtSpan::CLOSE } else { FmtSpan::NONE };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_span_events(events)
        // RUST_LOG decides; the builder's own INFO limit would hide debug.
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .finish()
        .with(filter)
        .init();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(args.log_spans) {
        eprintln!("error: RUST_LOG: {e}");
        return ExitCode::from(2);
    }
    let (auth, limits) = match (args.auth.auth(), args.limits.limits()) {
        (Ok(auth), Ok(limits)) => (auth, limits),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Auth::Jwt(verifier) = &auth {
        // Fetched once now, so a wrong pool or URL is reported before any client comes.
        match verifier.load().await {
            Ok(0) => {
                eprintln!(
                    "error: the JWKS at {} holds no RS256 signing key",
                    verifier.config().jwks_url
                );
                return ExitCode::from(2);
            }
            Ok(n) => eprintln!("auth: {n} signing keys from {}", verifier.config().jwks_url),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
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
    if matches!(auth, Auth::None) && !addr.ip().is_loopback() {
        eprintln!(
            "warning: no --token or JWT issuer: any loopback page that reaches {addr} can use the service"
        );
    }
    if args.allowed_origins.is_empty() && !addr.ip().is_loopback() {
        eprintln!(
            "warning: no --allowed-origin: only pages on loopback may connect from a browser"
        );
    }
    let pipeline = built.pipeline.clone();
    let (shutdown, signal) = app::Shutdown::new();
    let mut state = app::AppState::new(built.pipeline, built.history, signal);
    state.auth = auth;
    state.limits = limits;
    state.origins = Origins {
        allowed: args.allowed_origins,
    };
    state.access = args.group_attribute.map(|attribute| GroupAccess {
        attribute,
        public: if args.public_groups.is_empty() {
            vec!["public".to_string()]
        } else {
            args.public_groups
        },
    });
    state.sources = SourceRoots(built.doc_roots);
    let router = app::router(state);
    // axum stops accepting as soon as the shutdown begins; the WebSocket connections it has
    // handed off are the shutdown's to finish. The peer address feeds the per-client limit.
    let mut server = tokio::spawn(
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use app::auth::TokenUse;

    fn parse(argv: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(std::iter::once("websocket").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())
    }

    fn auth(argv: &[&str]) -> Result<Auth, String> {
        parse(argv)?.auth.auth()
    }

    #[test]
    fn a_cognito_pool_gives_its_issuer_and_keys_from_its_region() {
        let Ok(Auth::Jwt(verifier)) = auth(&[
            "--cognito-user-pool-id",
            "eu-west-1_AbC123",
            "--cognito-client-id",
            "c1",
            "--cognito-client-id",
            "c2",
            "--token-use",
            "access",
        ]) else {
            panic!("a JWT verifier");
        };
        let config = verifier.config();
        assert_eq!(
            config.issuer,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
        );
        assert!(config
            .jwks_url
            .ends_with("/eu-west-1_AbC123/.well-known/jwks.json"));
        assert_eq!(config.client_ids, ["c1", "c2"]);
        assert_eq!(config.token_use, TokenUse::Access);
        let Ok(Auth::Jwt(other)) = auth(&[
            "--jwks-url",
            "http://127.0.0.1:9/jwks.json",
            "--issuer",
            "https://issuer.example",
            "--cognito-client-id",
            "c",
        ]) else {
            panic!("a JWT verifier");
        };
        assert_eq!(other.config().issuer, "https://issuer.example");
        assert_eq!(other.config().token_use, TokenUse::Id);
    }

    #[test]
    fn identity_flags_that_do_not_go_together_are_refused() {
        assert!(matches!(auth(&[]), Ok(Auth::None)));
        assert!(matches!(auth(&["--token", "t"]), Ok(Auth::Shared(_))));
        for (argv, expected) in [
            (&["--token", ""][..], "the token is empty"),
            (
                &["--cognito-user-pool-id", "us-east-1_x"],
                "verifying JWTs needs at least one --cognito-client-id",
            ),
            (
                &[
                    "--cognito-user-pool-id",
                    "nopool",
                    "--cognito-client-id",
                    "c",
                ],
                "`nopool` does not start with its region",
            ),
            (&["--cognito-client-id", "c"], "--cognito-client-id needs"),
        ] {
            let message = auth(argv).expect_err("refused");
            assert!(message.contains(expected), "{argv:?}: {message}");
        }
        for argv in [
            &["--token", "t", "--cognito-user-pool-id", "us-east-1_x"][..],
            &["--jwks-url", "http://x"],
            &["--public-group", "p"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn limits_default_to_api_gateways_frame_size_and_refuse_zero() {
        let limits = parse(&[]).unwrap().limits.limits().unwrap();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.max_message_bytes, 32 * 1024);
        let set = parse(&["--max-message-bytes", "100", "--idle-timeout", "7"])
            .unwrap()
            .limits
            .limits()
            .unwrap();
        assert_eq!(set.max_message_bytes, 100);
        assert_eq!(set.idle_timeout, Duration::from_secs(7));
        let zero = parse(&["--max-connections", "0"]).unwrap().limits.limits();
        assert_eq!(zero.unwrap_err(), "--max-connections must be at least 1");
    }
}
