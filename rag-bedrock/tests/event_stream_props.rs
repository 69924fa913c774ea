//! Property tests of the event-stream wire: whatever bytes Bedrock's response body holds,
//! through the real SDK client and its event-stream decoder, the answer stream ends with a
//! typed error or cleanly, never a panic or a hang.
//!
//! - random bodies;
//! - well-formed frames (valid CRCs) carrying random events, payloads and exceptions;
//! - valid answers with a byte flipped, cut at any offset, or split at random points.

mod support;

use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rag_bedrock::BedrockGenerator;
use rag_core::{Chunk, Error, Generator, Message, ModelFamily, Prompt, Stage};
use serde_json::{json, Value};
use support::families::{self, PIECES};
use support::{
    chunk, client, collect, converse_event, exception, frame, text, Part, Reply, TestServer,
};

/// Cases per property: each one is a request to a loopback server.
const CASES: u32 = 64;
/// The generator's idle timeout.
const IDLE: Duration = Duration::from_millis(500);
/// Longer than any case may take: reaching it is a hang.
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// Which API a case calls.
#[derive(Debug, Clone, Copy)]
enum Api {
    Native(ModelFamily),
    Converse,
}

fn api() -> impl Strategy<Value = Api> {
    prop_oneof![
        proptest::sample::select(
            ModelFamily::ALL
                .into_iter()
                .filter(|f| *f != ModelFamily::Chat)
                .collect::<Vec<_>>(),
        )
        .prop_map(Api::Native),
        Just(Api::Converse),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The frames of a whole, normal answer.
fn answer_frames(api: Api) -> Vec<Bytes> {
    match api {
        Api::Native(family) => families::case(family)
            .chunks
            .iter()
            .map(|c| chunk(c))
            .collect(),
        Api::Converse => {
            let mut out = vec![converse_event("messageStart", json!({"role": "assistant"}))];
            out.extend(PIECES.iter().map(|p| {
                converse_event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": p}}),
                )
            }));
            out.push(converse_event(
                "contentBlockStop",
                json!({"contentBlockIndex": 0}),
            ));
            out.push(converse_event(
                "messageStop",
                json!({"stopReason": "end_turn"}),
            ));
            out.push(converse_event(
                "metadata",
                json!({"usage": {"inputTokens": 42, "outputTokens": 24, "totalTokens": 66},
                       "metrics": {"latencyMs": 730}}),
            ));
            out
        }
    }
}

/// What a case ended with.
struct Outcome {
    chunks: Vec<Chunk>,
    error: Option<Error>,
}

/// Serves `body` (in `parts`) as the event-stream response of one call of `api`, and reads
/// the whole answer stream; fails the case on a hang or an untyped ending.
async fn serve(api: Api, parts: Vec<Part>) -> Result<Outcome, TestCaseError> {
    let server = TestServer::start([Reply::Stream(parts)]).await;
    let (generator, prompt) = match api {
        Api::Native(family) => {
            let case = families::case(family);
            let generator = BedrockGenerator::builder(case.model_id)
                .with_client(client::runtime(&server.url()))
                .with_idle_timeout(IDLE)
                .build()
                .unwrap();
            (generator, case.prompt)
        }
        Api::Converse => {
            let generator = BedrockGenerator::converse("anthropic.claude-3-haiku-20240307-v1:0")
                .with_client(client::runtime(&server.url()))
                .with_idle_timeout(IDLE)
                .build()
                .unwrap();
            let prompt = Prompt::Chat {
                system: None,
                messages: vec![Message::user("What does Lambda do?")],
            };
            (generator, prompt)
        }
    };
    let run = async {
        match generator.generate(&prompt, &families::params()).await {
            Ok(stream) => collect(stream).await,
            Err(err) => (Vec::new(), Some(err)),
        }
    };
    let (chunks, error) = tokio::time::timeout(CASE_LIMIT, run)
        .await
        .map_err(|_| TestCaseError::fail(format!("{api:?}: no end within {CASE_LIMIT:?}")))?;
    eprintln!(
        "STAT {:?} chunks {} err {:?}",
        api,
        chunks.len(),
        error
            .as_ref()
            .map(|e| e.to_string().chars().take(120).collect::<String>())
    );
    if let Some(err) = &error {
        let typed = matches!(err, Error::Generation { .. })
            || matches!(
                err,
                Error::Timeout {
                    stage: Stage::Generation,
                    ..
                }
            );
        prop_assert!(typed, "{:?}: not a generation error: {:?}", api, err);
        prop_assert!(!err.to_string().is_empty());
    }
    for c in &chunks {
        if let Chunk::Text(t) = c {
            prop_assert!(!t.is_empty(), "{:?}: empty text chunk", api);
        }
    }
    // A clean end means the model's stop reason came; anything short of it is an error.
    let stopped = chunks.iter().any(|c| matches!(c, Chunk::Stop(_)));
    prop_assert!(
        error.is_some() || stopped,
        "{:?}: ended cleanly without a stop reason",
        api
    );
    Ok(Outcome { chunks, error })
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("bytes".to_owned()),
                    Just("delta".to_owned()),
                    Just("text".to_owned()),
                    Just("stopReason".to_owned()),
                    Just("usage".to_owned()),
                    "[a-zA-Z]{0,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One well-formed frame: a known or unknown event type, message type and content type, with
/// a payload that is random JSON, random bytes, or a `chunk` event's base64 of random bytes.
fn random_frame() -> impl Strategy<Value = Bytes> {
    let event_type = prop_oneof![
        proptest::sample::select(vec![
            "chunk",
            "messageStart",
            "contentBlockStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata",
            "initial-response",
        ])
        .prop_map(String::from),
        "[a-zA-Z-]{0,12}",
    ];
    let payload = prop_oneof![
        any_json().prop_map(|v| v.to_string().into_bytes()),
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..64).prop_map(|b| {
            use base64::Engine as _;
            json!({"bytes": base64::engine::general_purpose::STANDARD.encode(b)})
                .to_string()
                .into_bytes()
        }),
        "[ -~]{0,40}".prop_map(|s| json!({"bytes": s}).to_string().into_bytes()),
    ];
    let exception_type = prop_oneof![
        proptest::sample::select(vec![
            "throttlingException",
            "modelStreamErrorException",
            "internalServerException",
            "validationException",
            "serviceUnavailableException",
            "modelTimeoutException",
        ])
        .prop_map(String::from),
        "[a-zA-Z]{0,12}",
    ];
    prop_oneof![
        4 => (event_type, payload.clone(), proptest::sample::select(vec!["event", "other"]))
            .prop_map(|(event_type, payload, message_type)| frame(
                &[
                    (":event-type", event_type.as_str()),
                    (":content-type", "application/json"),
                    (":message-type", message_type),
                ],
                payload,
            )),
        1 => (exception_type, payload.clone()).prop_map(|(exception_type, payload)| frame(
            &[
                (":exception-type", exception_type.as_str()),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            payload,
        )),
        1 => payload.prop_map(|payload| frame(&[(":message-type", "error")], payload)),
        1 => (any_json(), vec(("[:a-z-]{1,10}", "[ -~]{0,10}"), 0..4)).prop_map(|(v, headers)| {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            frame(&headers, v.to_string())
        }),
    ]
}

/// A change to a valid answer's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR the byte at this position (modulo the length) with a non-zero mask.
    Flip(usize, u8),
    /// Keep only the bytes before this position (modulo the length + 1).
    Truncate(usize),
    /// Send the bytes split at these positions.
    Split(Vec<usize>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<usize>().prop_map(Mutation::Truncate),
        vec(any::<usize>(), 1..8).prop_map(Mutation::Split),
    ]
}

/// `bytes` sent as body chunks cut at `cuts`.
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Part> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parts = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        if cut > from {
            parts.push(Part::Bytes(Bytes::copy_from_slice(&bytes[from..cut])));
            from = cut;
        }
    }
    parts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_end_in_a_typed_error(
        api in api(),
        body in vec(any::<u8>(), 0..512),
        cuts in vec(any::<usize>(), 0..4),
    ) {
        runtime().block_on(async {
            let outcome = serve(api, split(&body, &cuts)).await?;
            // Random bytes never hold a whole answer with its stop reason.
            prop_assert!(outcome.error.is_some(), "{:?}: {:?}", api, outcome.chunks);
            Ok(())
        })?;
    }

    #[test]
    fn well_formed_frames_of_random_events_end_typed_or_cleanly(
        api in api(),
        frames in vec(random_frame(), 0..8),
    ) {
        runtime().block_on(async {
            let parts = frames.into_iter().map(Part::Bytes).collect();
            serve(api, parts).await.map(drop)
        })?;
    }

    #[test]
    fn valid_answers_after_random_frames_end_typed_or_cleanly(
        api in api(),
        noise in vec(random_frame(), 1..4),
        at in any::<usize>(),
    ) {
        runtime().block_on(async {
            let mut frames = answer_frames(api);
            let at = at % (frames.len() + 1);
            for (i, f) in noise.into_iter().enumerate() {
                frames.insert(at + i, f);
            }
            serve(api, frames.into_iter().map(Part::Bytes).collect()).await.map(drop)
        })?;
    }

    #[test]
    fn mutated_answers_end_typed_and_keep_only_intact_text(api in api(), mutation in mutation()) {
        runtime().block_on(async {
            let bytes: Vec<u8> = answer_frames(api).concat();
            let whole = families::answer();
            let parts = match &mutation {
                Mutation::Flip(at, mask) => {
                    let mut bytes = bytes.clone();
                    let at = at % bytes.len();
                    bytes[at] ^= mask;
                    vec![Part::Bytes(bytes.into())]
                }
                Mutation::Truncate(at) => {
                    let at = at % (bytes.len() + 1);
                    vec![Part::Bytes(Bytes::copy_from_slice(&bytes[..at]))]
                }
                Mutation::Split(cuts) => split(&bytes, cuts),
            };
            let outcome = serve(api, parts).await?;
            let got = text(&outcome.chunks);
            // Every frame is checked by its CRCs: a corrupt or cut frame is never decoded, so
            // the text is always a prefix of the answer.
            prop_assert!(whole.starts_with(&got), "{:?} {:?}: {:?}", api, mutation, got);
            match mutation {
                // A flipped byte always fails a CRC.
                Mutation::Flip(..) => prop_assert!(
                    outcome.error.is_some(),
                    "{:?} {:?}: a corrupt answer ended cleanly",
                    api,
                    mutation
                ),
                // A cut answer ends cleanly only when all of it up to the stop reason came.
                Mutation::Truncate(_) => {
                    if outcome.error.is_none() {
                        prop_assert_eq!(got, whole);
                    }
                }
                // Split anywhere, the bytes are the same answer.
                Mutation::Split(_) => {
                    prop_assert!(outcome.error.is_none(), "{:?}: {:?}", api, outcome.error);
                    prop_assert_eq!(got, whole);
                }
            }
            Ok(())
        })?;
    }
}

#[test]
fn an_exception_frame_is_a_typed_error() {
    // The same path the properties take, with a known outcome: the harness itself is sound.
    runtime().block_on(async {
        let outcome = serve(
            Api::Converse,
            vec![Part::Bytes(exception("throttlingException", "slow down"))],
        )
        .await
        .unwrap();
        let err = outcome.error.expect("an error");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("slow down"), "{err}");
    });
}
