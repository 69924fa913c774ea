//! The executor's own cost: a 50-node app on a generator that answers at once, against the
//! same 50 generator calls made directly (the difference is what the executor adds: planning
//! the start order, rendering prompts from references, events, the cache lookups).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use rag_app::{Inputs, Models, Plan, RunEvent, Runner};
use rag_core::testing::ScriptedGenerator;
use rag_core::{GenerationParams, Generator, ImageGenerator, Message, Prompt, Result};
use serde_json::{json, Map, Value};

const NODES: usize = 50;
const TOKENS: usize = 20;
const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

#[derive(Debug)]
struct Scripted(Arc<ScriptedGenerator>);

impl Models for Scripted {
    fn generator(&self, _model_id: &str) -> Result<Arc<dyn Generator>> {
        Ok(self.0.clone())
    }

    fn image_generator(&self, model_id: &str) -> Result<Arc<dyn ImageGenerator>> {
        Err(rag_core::Error::config(format!(
            "no image model {model_id} here"
        )))
    }
}

/// Node `n{i}` references the two before it (a chain of width two): 50 generate nodes that
/// start as their references finish.
fn app() -> Value {
    let nodes: Map<String, Value> = (0..NODES)
        .map(|i| {
            let prompt = match i {
                0 => "Start from {{@seed}}.".to_owned(),
                1 => "Also from {{@seed}}.".to_owned(),
                _ => format!("Combine {{{{@n{}}}}} with {{{{@n{}}}}}.", i - 1, i - 2),
            };
            (
                format!("n{i}"),
                json!({"kind": "generate", "model": MODEL, "prompt": prompt, "params": {"max_tokens": 64}}),
            )
        })
        .chain(std::iter::once((
            "seed".to_owned(),
            json!({"kind": "input", "default": "a seed text"}),
        )))
        .collect();
    json!({"format": "1.0", "id": "bench", "name": "Bench", "nodes": nodes})
}

fn executor(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let generator = Arc::new(ScriptedGenerator::counting(TOKENS).without_prompt_record());
    let plan = Plan::from_json(&app().to_string()).expect("the bench app is valid");
    let runner = Runner::builder(Scripted(generator.clone()))
        .with_cache(false)
        .with_concurrency(2)
        .build()
        .expect("runner");
    let inputs = Inputs::new();
    let params = GenerationParams::default().with_max_tokens(64);
    // The answers the app's prompts hold: 20 tokens each, as the executor pastes them in.
    let answer = generator.answer();

    let mut group = c.benchmark_group("executor_50_nodes");
    group.bench_function("baseline_50_generator_calls", |b| {
        b.to_async(&rt).iter(|| {
            let generator = generator.clone();
            let answer = answer.clone();
            let params = params.clone();
            async move {
                let mut total = 0;
                for i in 0..NODES {
                    let prompt = Prompt::Chat {
                        system: None,
                        messages: vec![Message::user(format!(
                            "Combine {answer} with {answer} ({i})."
                        ))],
                    };
                    let mut stream = generator.generate(&prompt, &params).await.expect("starts");
                    while let Some(chunk) = stream.next().await {
                        if let Ok(rag_core::Chunk::Text(t)) = chunk {
                            total += t.len();
                        }
                    }
                }
                assert!(total > 0);
            }
        });
    });
    group.bench_function("run_50_node_app", |b| {
        b.to_async(&rt).iter(|| {
            let runner = runner.clone();
            let plan = plan.clone();
            let inputs = inputs.clone();
            async move {
                let mut stream = runner.run(&plan, &inputs).expect("starts");
                let mut done = 0;
                while let Some(event) = stream.next().await {
                    if let RunEvent::Finished(report) = event {
                        assert!(report.is_success());
                        done = report.outputs.len();
                    }
                }
                assert_eq!(done, NODES + 1);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, executor);
criterion_main!(benches);
