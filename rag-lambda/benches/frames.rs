//! What gathering tokens into frames costs the ask function, against posting one frame per
//! token: the JSON of every frame of a 2,000-token answer, built both ways.
//!
//! The CPU time is the small part; the frames count is the large one (each frame is one
//! PostToConnection round trip and one metered message): the bench prints both.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rag_lambda::coalesce::TokenBatcher;
use rag_lambda::protocol::{Frame, Reply};

/// A 2,000-token answer in pieces of one to six characters, with quotes and newlines.
fn answer() -> Vec<String> {
    let words = [
        "Lambda",
        " runs",
        " your",
        " code",
        " in",
        " response",
        " to",
        " events",
        ",",
        " and",
        " \"scales\"",
        " automatically",
        ".\n",
        " It",
        " bills",
        " per",
        " millisecond",
    ];
    (0..2_000)
        .map(|i| words[i % words.len()].to_string())
        .collect()
}

/// Every frame's JSON when each token is its own frame.
fn per_token(pieces: &[String]) -> Vec<String> {
    pieces
        .iter()
        .map(|text| Reply::new(&Frame::Token { text: text.clone() }, Some("q1"), "r-1").to_json())
        .collect()
}

/// Every frame's JSON when tokens are gathered into frames of at most `max` bytes (the whole
/// answer arriving within one interval: the fewest frames).
fn gathered(pieces: &[String], max: usize) -> Vec<String> {
    let envelope = Reply::new(
        &Frame::Token {
            text: String::new(),
        },
        Some("q1"),
        "r-1",
    )
    .to_json()
    .len();
    let mut batcher = TokenBatcher::new(max - envelope);
    let mut full = Vec::new();
    for piece in pieces {
        batcher.push(piece, &mut full);
    }
    full.extend(batcher.take());
    full.into_iter()
        .map(|text| Reply::new(&Frame::Token { text }, Some("q1"), "r-1").to_json())
        .collect()
}

/// Every frame's JSON when a frame goes out every `every` tokens (a model streaming ten
/// times faster than the frame interval).
fn gathered_every(pieces: &[String], every: usize) -> Vec<String> {
    let mut batcher = TokenBatcher::new(31_000);
    let mut frames = Vec::new();
    let mut full = Vec::new();
    for chunk in pieces.chunks(every) {
        for piece in chunk {
            batcher.push(piece, &mut full);
        }
        frames.append(&mut full);
        frames.extend(batcher.take());
    }
    frames
        .into_iter()
        .map(|text| Reply::new(&Frame::Token { text }, Some("q1"), "r-1").to_json())
        .collect()
}

fn frames(c: &mut Criterion) {
    let pieces = answer();
    let bytes: usize = pieces.iter().map(String::len).sum();
    eprintln!(
        "frames for a 2,000-token answer: {} one per token, {} every 10 tokens, {} gathered to 32,000 bytes",
        per_token(&pieces).len(),
        gathered_every(&pieces, 10).len(),
        gathered(&pieces, 32_000).len()
    );
    let mut group = c.benchmark_group("frames");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(BenchmarkId::new("one_per_token", 2_000), |b| {
        b.iter(|| per_token(&pieces))
    });
    group.bench_function(BenchmarkId::new("every_10_tokens", 2_000), |b| {
        b.iter(|| gathered_every(&pieces, 10))
    });
    group.bench_function(BenchmarkId::new("gathered_32000", 2_000), |b| {
        b.iter(|| gathered(&pieces, 32_000))
    });
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
