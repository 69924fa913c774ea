//! W2 and W3 of DESIGN section 6: streaming through the pipeline, and many asks at once.
//!
//! Each group has a baseline: W2 against draining the same generator directly (the pipeline's
//! own cost is the difference), W3 against 1,000 bare 50 ms sleeps (the floor set by the
//! slowest stage).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;
use rag::memory::InMemoryHistory;
use rag::{Ask, Event, GenerationParams, Generator, Pipeline, Prompt, SessionId};
use rag_core::testing::{Delayed, PlainTemplate, ScriptedGenerator, StaticRetriever};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// W2: one ask whose generator yields 1,000 tokens with no delay.
fn w2_streaming(c: &mut Criterion) {
    let rt = runtime();
    let generator = ScriptedGenerator::counting(1_000).without_prompt_record();
    let pipeline = Pipeline::builder()
        .with_generator(generator.clone())
        .with_template(PlainTemplate::default())
        .with_retriever(StaticRetriever::numbered(5).without_request_record())
        .with_history(InMemoryHistory::new())
        .build()
        .expect("pipeline");
    let session = SessionId::new("bench-w2").expect("session");

    let mut group = c.benchmark_group("w2_streaming_1000_tokens");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("baseline_generator_alone", |b| {
        let prompt = Prompt::Text("Question: q\n".into());
        let params = GenerationParams::default();
        b.to_async(&rt).iter(|| async {
            let mut stream = generator.generate(&prompt, &params).await.expect("stream");
            let mut n = 0;
            while let Some(chunk) = stream.next().await {
                chunk.expect("chunk");
                n += 1;
            }
            assert_eq!(n, 1_001);
        });
    });
    group.bench_function("pipeline_ask", |b| {
        b.to_async(&rt).iter(|| async {
            let mut events = pipeline.ask(Ask::new(session.clone(), "What is Lambda?"));
            let mut tokens = 0;
            while let Some(event) = events.next().await {
                match event {
                    Event::Token(_) => tokens += 1,
                    Event::Error(f) => panic!("{f}"),
                    _ => {}
                }
            }
            assert_eq!(tokens, 1_000);
        });
    });
    group.finish();
}

/// W3: 1,000 concurrent asks; retriever 50 ms, history 20 ms, 100 tokens each.
fn w3_concurrency(c: &mut Criterion) {
    const ASKS: usize = 1_000;
    let rt = runtime();
    let pipeline = Pipeline::builder()
        .with_generator(ScriptedGenerator::counting(100).without_prompt_record())
        .with_template(PlainTemplate::default())
        .with_retriever(Delayed::new(
            StaticRetriever::numbered(5).without_request_record(),
            Duration::from_millis(50),
        ))
        .with_history(Arc::new(
            Delayed::new(InMemoryHistory::new(), Duration::from_millis(20))
                .with_write_delay(Duration::ZERO),
        ))
        .build()
        .expect("pipeline");
    let sessions: Vec<SessionId> = (0..ASKS)
        .map(|i| SessionId::new(format!("bench-w3-{i}")).expect("session"))
        .collect();

    let mut group = c.benchmark_group("w3_concurrency");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(BenchmarkId::new("baseline_sleep_50ms", ASKS), |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = (0..ASKS)
                .map(|_| tokio::spawn(tokio::time::sleep(Duration::from_millis(50))))
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
        });
    });
    group.bench_function(BenchmarkId::new("pipeline_asks", ASKS), |b| {
        b.to_async(&rt).iter(|| async {
            let tasks: Vec<_> = sessions
                .iter()
                .map(|s| {
                    let pipeline = pipeline.clone();
                    let ask = Ask::new(s.clone(), "How do functions scale?");
                    tokio::spawn(async move {
                        let mut events = pipeline.ask(ask);
                        let mut done = false;
                        while let Some(event) = events.next().await {
                            done |= matches!(event, Event::Done(_));
                        }
                        done
                    })
                })
                .collect();
            for t in tasks {
                assert!(t.await.expect("task"), "every ask completes");
            }
        });
    });
    group.finish();
}

criterion_group!(benches, w2_streaming, w3_concurrency);
criterion_main!(benches);
