//! Properties of the event-stream reader (`chunk_stream`) over random byte streams: a valid
//! stream split anywhere (inside lines, CRLF pairs and UTF-8 characters) decodes to the same
//! chunks as the whole; garbage, and valid streams corrupted or cut anywhere, never panic and
//! give only chunks and at most one typed error, as the last item.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use rag_core::{Chunk, Error};
use rag_openai::chunk_stream;
use support::{answer_chunks, answer_events};

/// Every item of the reader over `pieces`, checked to end after its first error.
fn read(pieces: Vec<Vec<u8>>) -> (Vec<Chunk>, Option<Error>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let body = futures::stream::iter(pieces.into_iter().map(Ok::<_, Infallible>));
        let mut stream = chunk_stream(body, Duration::from_secs(5), 256);
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(err) => {
                    assert!(stream.next().await.is_none(), "items after {err}");
                    return (chunks, Some(err));
                }
            }
        }
        (chunks, None)
    })
}

/// `bytes` cut at `cuts` (positions taken modulo the length).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return vec![];
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c % bytes.len()).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// The test answer's whole stream, with LF or CRLF line ends and comments between events.
fn wire(crlf: bool, comments: bool) -> Vec<u8> {
    let mut out = String::new();
    for event in answer_events() {
        if comments {
            out.push_str(": keep-alive\n\n");
        }
        out.push_str(&event);
    }
    if crlf {
        out = out.replace('\n', "\r\n");
    }
    out.into_bytes()
}

/// Only the errors the reader is documented to give.
fn typed(err: &Error) -> bool {
    matches!(
        err,
        Error::Generation { .. } | Error::PromptTooLong { .. } | Error::Timeout { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_valid_stream_split_anywhere_decodes_the_same(
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        crlf in any::<bool>(),
        comments in any::<bool>(),
    ) {
        let bytes = wire(crlf, comments);
        let (chunks, error) = read(split(&bytes, &cuts));
        prop_assert!(error.is_none(), "{:?}", error);
        prop_assert_eq!(chunks, answer_chunks());
    }

    #[test]
    fn garbage_gives_only_chunks_or_typed_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let (_, error) = read(split(&bytes, &cuts));
        if let Some(err) = error {
            prop_assert!(typed(&err), "{}", err);
        }
    }

    #[test]
    fn sse_shaped_garbage_gives_only_chunks_or_typed_errors(
        lines in prop::collection::vec(
            prop_oneof![
                Just("data: [DONE]".to_owned()),
                Just(": keep-alive".to_owned()),
                Just(String::new()),
                Just("event: error".to_owned()),
                Just(r#"data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#.to_owned()),
                Just(r#"data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#.to_owned()),
                Just(r#"data: {"error":{"message":"m","type":"server_error"}}"#.to_owned()),
                Just(r#"data: {"choices":[{"finish_reason":"stop"}]}"#.to_owned()),
                "data: [ -~]{0,30}",
                "[a-z]{0,6}:? ?[ -~]{0,20}",
            ],
            0..30,
        ),
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let text: String = lines.iter().map(|l| format!("{l}{end}")).collect();
        let (chunks, error) = read(split(text.as_bytes(), &cuts));
        if let Some(err) = &error {
            prop_assert!(typed(err), "{}", err);
        }
        // A stream that reached neither [DONE] nor a finish reason never ends silently.
        let finished = text.contains("data: [DONE]") || chunks.iter().any(|c| matches!(c, Chunk::Stop(_)));
        prop_assert!(finished || error.is_some(), "silent end of {:?}", text);
    }

    #[test]
    fn a_valid_stream_cut_or_corrupted_anywhere_never_panics(
        cut in any::<usize>(),
        flip in any::<usize>(),
        byte in any::<u8>(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut bytes = wire(true, true);
        let at = flip % bytes.len();
        bytes[at] = byte;
        bytes.truncate(cut % (bytes.len() + 1));
        let (chunks, error) = read(split(&bytes, &cuts));
        if let Some(err) = &error {
            prop_assert!(typed(err), "{}", err);
        }
        // Whatever came is a prefix-shaped part of the answer: never more text than it has.
        let text: String = chunks.iter().filter_map(|c| match c { Chunk::Text(t) => Some(t.as_str()), _ => None }).collect();
        prop_assert!(text.chars().count() <= support::answer().chars().count() + 1, "{}", text);
    }
}
