//! InvokeModelWithResponseStream for every family, through the real SDK client against a
//! loopback server that speaks Bedrock's event-stream wire format.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use rag_bedrock::BedrockGenerator;
use rag_core::{Error, Generator, Stage, StopReason, Usage};
use support::families::{self, Case};
use support::{
    chunk, client, collect, decoded_path, exception, stop, text, Part, Reply, TestServer,
};

fn generator(case: &Case, server: &TestServer) -> BedrockGenerator {
    BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .with_idle_timeout(Duration::from_millis(400))
        .build()
        .unwrap()
}

/// A generator whose SDK client retries, as one used without a pipeline may ask for.
fn retrying_generator(case: &Case, server: &TestServer) -> BedrockGenerator {
    BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .with_retry_config(client::fast_retry())
        .with_idle_timeout(Duration::from_millis(400))
        .build()
        .unwrap()
}

fn frames(chunks: &[String]) -> Vec<Bytes> {
    chunks.iter().map(|c| chunk(c)).collect()
}

#[test]
fn frames_built_here_decode_with_the_sdk_decoder() {
    use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
    let bytes = chunk(r#"{"generation":"hi"}"#);
    // Prelude: total length, headers length, prelude CRC; then headers, payload, message CRC.
    let total = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    assert_eq!(total, bytes.len());
    let mut decoder = MessageFrameDecoder::new();
    let mut buf = &bytes[..];
    let DecodedFrame::Complete(message) = decoder.decode_frame(&mut buf).unwrap() else {
        panic!("incomplete frame")
    };
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .map(|h| h.value().as_string().unwrap().as_str().to_owned())
    };
    assert_eq!(header(":event-type").as_deref(), Some("chunk"));
    assert_eq!(header(":message-type").as_deref(), Some("event"));
    let payload: serde_json::Value = serde_json::from_slice(message.payload()).unwrap();
    assert_eq!(payload["bytes"], "eyJnZW5lcmF0aW9uIjoiaGkifQ==");
    // A flipped payload byte fails the message CRC.
    let mut corrupt = bytes.to_vec();
    let last = corrupt.len() - 6;
    corrupt[last] ^= 0xff;
    assert!(MessageFrameDecoder::new()
        .decode_frame(&mut &corrupt[..])
        .is_err());
}

#[tokio::test]
async fn every_family_streams_its_answer_with_usage_and_stop_reason() {
    for case in families::cases() {
        let server = TestServer::start([Reply::frames(frames(&case.chunks))]).await;
        let stream = generator(&case, &server)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none(), "{}: {err:?}", case.family);
        let text_chunks = chunks
            .iter()
            .filter(|c| matches!(c, rag_core::Chunk::Text(_)))
            .count();
        assert_eq!(text_chunks, families::PIECES.len(), "{}", case.family);
        assert_eq!(text(&chunks), families::answer(), "{}", case.family);
        assert_eq!(
            families::merged_usage(&chunks),
            Some(Usage::new(
                families::INPUT_TOKENS,
                families::output_tokens()
            )),
            "{}",
            case.family
        );
        assert_eq!(stop(&chunks), Some(StopReason::EndTurn), "{}", case.family);

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(
            decoded_path(request),
            format!("/model/{}/invoke-with-response-stream", case.model_id)
        );
        assert_eq!(request.json(), case.body, "{} request body", case.family);
        assert_eq!(request.headers["content-type"], "application/json");
        let auth = request.headers["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256"), "{auth}");
        assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    }
}

#[tokio::test]
async fn a_throttled_initial_call_is_retried_by_the_sdk_when_asked_for() {
    for case in families::cases() {
        let server = TestServer::start([
            Reply::error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
            Reply::error(
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.",
            ),
            Reply::frames(frames(&case.chunks)),
        ])
        .await;
        let stream = retrying_generator(&case, &server)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        assert!(err.is_none());
        assert_eq!(text(&chunks), families::answer());
        assert_eq!(server.hits(), 3, "{}", case.family);
        // Every attempt sent the same body.
        let bodies: Vec<_> = server.requests().iter().map(|r| r.json()).collect();
        assert!(bodies.iter().all(|b| *b == case.body));
    }
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_a_retryable_error_with_the_message() {
    let case = families::claude();
    let throttled = Reply::error(429, "ThrottlingException", "Too many tokens, please wait.");
    let server = TestServer::start(vec![throttled; 3]).await;
    let err = retrying_generator(&case, &server)
        .generate(&case.prompt, &families::params())
        .await
        .err()
        .unwrap();
    assert_eq!(server.hits(), 3);
    assert!(err.is_retryable());
    assert_eq!(err.stage(), Some(Stage::Generation));
    let msg = err.to_string();
    assert!(
        msg.contains("ThrottlingException") && msg.contains("Too many tokens, please wait."),
        "{msg}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn failed_initial_calls_are_classified_and_keep_the_service_message() {
    // (status, error type, retryable, calls made: one, since the SDK's retries are off and
    // the pipeline retries the retryable ones)
    let cases = [
        (400, "ValidationException", false, 1),
        (403, "AccessDeniedException", false, 1),
        (404, "ResourceNotFoundException", false, 1),
        (408, "ModelTimeoutException", false, 1),
        (400, "ServiceQuotaExceededException", false, 1),
        (500, "InternalServerException", true, 1),
        (503, "ServiceUnavailableException", true, 1),
    ];
    let case = families::llama3();
    for (status, error_type, retryable, attempts) in cases {
        let message = format!("{error_type} says why");
        let server = TestServer::start(vec![Reply::error(status, error_type, &message); 3]).await;
        let err = generator(&case, &server)
            .generate(&case.prompt, &families::params())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::Generation { .. }), "{err}");
        assert_eq!(err.is_retryable(), retryable, "{error_type}");
        assert!(err.to_string().contains(&message), "{err}");
        assert!(err.to_string().contains(error_type), "{err}");
        assert_eq!(server.hits(), attempts, "{error_type}");
    }
}

#[tokio::test]
async fn an_exception_after_some_chunks_ends_the_stream_with_its_error() {
    // (exception type, retryable)
    let exceptions = [
        ("throttlingException", true),
        ("modelStreamErrorException", true),
        ("internalServerException", true),
        ("serviceUnavailableException", true),
        ("validationException", false),
        ("modelTimeoutException", false),
    ];
    for case in families::cases() {
        for (exception_type, retryable) in exceptions {
            let k = 5;
            let mut body = frames(&case.chunks[..k]);
            body.push(exception(exception_type, "The model stopped: capacity"));
            body.extend(frames(&case.chunks[k..]));
            let server = TestServer::start([Reply::frames(body)]).await;
            let stream = generator(&case, &server)
                .generate(&case.prompt, &families::params())
                .await
                .unwrap();
            let (chunks, err) = collect(stream).await;
            let err = err.unwrap_or_else(|| panic!("{} {exception_type}: no error", case.family));
            assert_eq!(
                err.is_retryable(),
                retryable,
                "{} {exception_type}",
                case.family
            );
            let msg = err.to_string();
            assert!(
                msg.contains("The model stopped: capacity")
                    && msg.to_lowercase().contains(&exception_type.to_lowercase()),
                "{msg}"
            );
            // The text before the exception arrived; nothing after it.
            let text = text(&chunks);
            assert!(
                !text.is_empty() && families::answer().starts_with(&text),
                "{text:?}"
            );
            assert!(text.len() < families::answer().len());
            assert_eq!(stop(&chunks), None);
        }
    }
}

#[tokio::test]
async fn a_malformed_chunk_is_a_non_retryable_error() {
    for case in families::cases() {
        let mut body = frames(&case.chunks[..3]);
        body.push(chunk("{\"outputs\": [{\"text\": unquoted}"));
        let server = TestServer::start([Reply::frames(body)]).await;
        let stream = generator(&case, &server)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (_, err) = collect(stream).await;
        let err = err.unwrap();
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("not") && err.to_string().contains(case.family.name()),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_truncated_frame_is_a_retryable_error() {
    for case in families::cases() {
        let mut body = frames(&case.chunks[..4]);
        let next = chunk(&case.chunks[4]);
        body.push(next.slice(..next.len() / 2));
        let server = TestServer::start([Reply::frames(body)]).await;
        let stream = generator(&case, &server)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        let err = err.unwrap();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("could not be read"), "{err}");
        assert!(!text(&chunks).is_empty());
    }
}

#[tokio::test]
async fn a_stream_cut_at_a_frame_boundary_before_the_stop_reason_is_an_error() {
    let case = families::mistral();
    let server = TestServer::start([Reply::frames(frames(&case.chunks[..6]))]).await;
    let stream = generator(&case, &server)
        .generate(&case.prompt, &families::params())
        .await
        .unwrap();
    let (chunks, err) = collect(stream).await;
    assert_eq!(text(&chunks), families::PIECES[..6].concat());
    let err = err.unwrap();
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("before the model's stop reason"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_that_stalls_past_the_idle_timeout_ends_with_a_timeout() {
    for case in families::cases() {
        let mut parts: Vec<Part> = frames(&case.chunks[..4])
            .into_iter()
            .map(Part::Bytes)
            .collect();
        // A pause shorter than the idle timeout is fine; the stall is not.
        parts.push(Part::Pause(Duration::from_millis(150)));
        parts.push(Part::Bytes(chunk(&case.chunks[4])));
        parts.push(Part::Stall);
        let server = TestServer::start([Reply::Stream(parts)]).await;
        let started = Instant::now();
        let stream = generator(&case, &server)
            .generate(&case.prompt, &families::params())
            .await
            .unwrap();
        let (chunks, err) = collect(stream).await;
        let elapsed = started.elapsed();
        match err {
            Some(Error::Timeout {
                stage: Stage::Generation,
                after,
            }) => {
                assert_eq!(after, Duration::from_millis(400));
            }
            other => panic!("{}: expected a timeout, got {other:?}", case.family),
        }
        assert!(!text(&chunks).is_empty());
        assert!(
            elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }
}

#[tokio::test]
async fn unknown_event_types_and_keys_are_ignored() {
    let case = families::titan();
    let mut body = vec![support::frame(
        &[
            (":event-type", "futureEvent"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        "{}",
    )];
    let mut chunks = case.chunks.clone();
    chunks[0] = chunks[0].replace("\"index\":0", "\"index\":0,\"newField\":{\"a\":[1,2]}");
    assert!(chunks[0].contains("newField"));
    body.extend(frames(&chunks));
    let server = TestServer::start([Reply::frames(body)]).await;
    let stream = generator(&case, &server)
        .generate(&case.prompt, &families::params())
        .await
        .unwrap();
    let (chunks, err) = collect(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text(&chunks), families::answer());
}

#[tokio::test]
async fn stop_reasons_other_than_end_turn_are_normalized() {
    let case = families::llama3();
    let mut chunks = case.chunks.clone();
    let last = chunks.len() - 1;
    chunks[last] = chunks[last].replace("\"stop\"", "\"length\"");
    let server = TestServer::start([Reply::frames(frames(&chunks))]).await;
    let stream = generator(&case, &server)
        .generate(&case.prompt, &families::params())
        .await
        .unwrap();
    let (chunks, _) = collect(stream).await;
    assert_eq!(stop(&chunks), Some(StopReason::MaxTokens));
}

#[tokio::test]
async fn the_family_override_picks_the_body_for_an_unknown_model_id() {
    let case = families::mistral();
    let server = TestServer::start([Reply::frames(frames(&case.chunks))]).await;
    let arn = "arn:aws:bedrock:us-east-1:123456789012:imported-model/abc123";
    let generator = BedrockGenerator::builder(arn)
        .with_client(client::runtime(&server.url()))
        .with_family_override(rag_core::ModelFamily::Mistral)
        .build()
        .unwrap();
    let (chunks, err) = collect(
        generator
            .generate(&case.prompt, &families::params())
            .await
            .unwrap(),
    )
    .await;
    assert!(err.is_none());
    assert_eq!(text(&chunks), families::answer());
    assert_eq!(server.requests()[0].json(), case.body);
}

#[tokio::test]
async fn a_frame_with_a_bad_checksum_is_a_retryable_error() {
    let case = families::titan();
    let mut body = frames(&case.chunks[..3]);
    let mut corrupt = chunk(&case.chunks[3]).to_vec();
    let at = corrupt.len() - 8;
    corrupt[at] ^= 0x20;
    body.push(Bytes::from(corrupt));
    let server = TestServer::start([Reply::frames(body)]).await;
    let stream = generator(&case, &server)
        .generate(&case.prompt, &families::params())
        .await
        .unwrap();
    let (chunks, err) = collect(stream).await;
    assert_eq!(text(&chunks), families::PIECES[..3].concat());
    let err = err.unwrap();
    assert!(
        err.is_retryable() && err.to_string().contains("could not be read"),
        "{err}"
    );
}

#[tokio::test]
async fn a_whole_frame_that_is_not_a_chunk_event_is_not_retryable() {
    let case = families::claude();
    let mut body = frames(&case.chunks[..3]);
    body.push(support::frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        "{\"bytes\": 17}",
    ));
    let server = TestServer::start([Reply::frames(body)]).await;
    let stream = generator(&case, &server)
        .generate(&case.prompt, &families::params())
        .await
        .unwrap();
    let (_, err) = collect(stream).await;
    let err = err.unwrap();
    assert!(
        !err.is_retryable() && err.to_string().contains("cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn an_initial_call_left_unanswered_ends_with_a_timeout() {
    let case = families::llama2();
    let server = TestServer::start([Reply::Hang]).await;
    let generator = BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .with_request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = generator
        .generate(&case.prompt, &families::params())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Timeout { stage: Stage::Generation, after } if after == Duration::from_millis(300)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.hits(), 1);
}
