use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::generator::{ChunkStream, Generator};
use crate::prompt::Prompt;
use crate::types::{Chunk, GenerationParams, StopReason, Usage};

/// What a [`ScriptedGenerator`] saw and did, shared with the test.
#[derive(Debug, Default)]
pub struct GeneratorProbe {
    calls: AtomicUsize,
    streams_started: AtomicUsize,
    streams_finished: AtomicUsize,
    streams_dropped: AtomicUsize,
    prompts: Mutex<Vec<Prompt>>,
}

impl GeneratorProbe {
    /// Calls of `generate`, failed ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Streams handed out.
    pub fn streams_started(&self) -> usize {
        self.streams_started.load(Ordering::SeqCst)
    }

    /// Streams that reached their end (normal or scripted failure).
    pub fn streams_finished(&self) -> usize {
        self.streams_finished.load(Ordering::SeqCst)
    }

    /// Streams dropped before their end: the model calls that were cancelled.
    pub fn streams_dropped(&self) -> usize {
        self.streams_dropped.load(Ordering::SeqCst)
    }

    /// Streams handed out and not yet finished or dropped.
    pub fn streams_open(&self) -> usize {
        self.streams_started() - self.streams_finished() - self.streams_dropped()
    }

    /// Every prompt `generate` was called with.
    pub fn prompts(&self) -> Vec<Prompt> {
        self.prompts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Counts a stream as dropped unless it was marked finished first.
struct StreamGuard {
    probe: Arc<GeneratorProbe>,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.probe.streams_finished
        } else {
            &self.probe.streams_dropped
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// The behaviour of a [`ScriptedGenerator`], shared by its clones and streams.
#[derive(Debug, Clone)]
struct Script {
    tokens: Arc<[String]>,
    delay: Duration,
    first_delay: Duration,
    fail_first: usize,
    fail_first_error: Error,
    fail_at: Option<(usize, Error)>,
    stall_at: Option<usize>,
    usage: Option<Usage>,
    stop: Option<StopReason>,
    record_prompts: bool,
    provider: Option<String>,
    model_id: Option<String>,
}

/// A generator that streams a fixed answer, token by token, with scripted delays and failures.
#[derive(Debug, Clone)]
pub struct ScriptedGenerator {
    script: Arc<Script>,
    probe: Arc<GeneratorProbe>,
}

impl ScriptedGenerator {
    /// Streams `tokens` with no delay, then a stop reason of [`StopReason::EndTurn`].
    pub fn new<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ScriptedGenerator {
            script: Arc::new(Script {
                tokens: tokens.into_iter().map(Into::into).collect(),
                delay: Duration::ZERO,
                first_delay: Duration::ZERO,
                fail_first: 0,
                fail_first_error: Error::generation("scripted throttling", true),
                fail_at: None,
                stall_at: None,
                usage: None,
                stop: Some(StopReason::EndTurn),
                record_prompts: true,
                provider: None,
                model_id: None,
            }),
            probe: Arc::default(),
        }
    }

    /// `n` tokens `"t0 "`, `"t1 "`, ...
    pub fn counting(n: usize) -> Self {
        Self::new((0..n).map(|i| format!("t{i} ")))
    }

    fn edit(mut self, f: impl FnOnce(&mut Script)) -> Self {
        f(Arc::make_mut(&mut self.script));
        self
    }

    /// Waits `delay` before each token.
    pub fn with_delay(self, delay: Duration) -> Self {
        self.edit(|s| s.delay = delay)
    }

    /// Waits `delay` before the first token (in addition to the per-token delay).
    pub fn with_first_token_delay(self, delay: Duration) -> Self {
        self.edit(|s| s.first_delay = delay)
    }

    /// The first `n` calls fail to start with `error`.
    pub fn fail_first(self, n: usize, error: Error) -> Self {
        self.edit(|s| {
            s.fail_first = n;
            s.fail_first_error = error;
        })
    }

    /// Every stream fails with `error` after `k` tokens (k = 0: before the first token).
    pub fn fail_at(self, k: usize, error: Error) -> Self {
        self.edit(|s| s.fail_at = Some((k, error)))
    }

    /// Every stream goes silent forever after `k` tokens.
    pub fn stall_at(self, k: usize) -> Self {
        self.edit(|s| s.stall_at = Some(k))
    }

    /// Reports `usage` after the last token.
    pub fn with_usage(self, usage: Usage) -> Self {
        self.edit(|s| s.usage = Some(usage))
    }

    /// Ends with `stop` (default [`StopReason::EndTurn`]).
    pub fn with_stop(self, stop: Option<StopReason>) -> Self {
        self.edit(|s| s.stop = stop)
    }

    /// Keeps no copy of the prompts it gets (counts are still kept): for benchmarks and soaks,
    /// where the record would grow without end.
    pub fn without_prompt_record(self) -> Self {
        self.edit(|s| s.record_prompts = false)
    }

    /// What this generator (and its clones) saw.
    pub fn probe(&self) -> Arc<GeneratorProbe> {
        Arc::clone(&self.probe)
    }

    /// Says it calls `model_id` of `provider` ([`Generator::model_id`],
    /// [`Generator::provider`]); by default it names neither.
    pub fn with_model(self, provider: impl Into<String>, model_id: impl Into<String>) -> Self {
        self.edit(|s| {
            s.provider = Some(provider.into());
            s.model_id = Some(model_id.into());
        })
    }

    /// The full answer it streams.
    pub fn answer(&self) -> String {
        self.script.tokens.concat()
    }
}

enum Step {
    Token(usize),
    Tail(usize),
}

#[async_trait]
impl Generator for ScriptedGenerator {
    async fn generate(&self, prompt: &Prompt, _params: &GenerationParams) -> Result<ChunkStream> {
        let call = self.probe.calls.fetch_add(1, Ordering::SeqCst);
        if self.script.record_prompts {
            self.probe
                .prompts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(prompt.clone());
        }
        if call < self.script.fail_first {
            return Err(self.script.fail_first_error.clone());
        }
        self.probe.streams_started.fetch_add(1, Ordering::SeqCst);
        let this = Arc::clone(&self.script);
        let guard = StreamGuard {
            probe: Arc::clone(&self.probe),
            finished: false,
        };
        let stream = futures::stream::unfold((Step::Token(0), guard), move |(step, mut guard)| {
            let this = this.clone();
            async move {
                match step {
                    Step::Token(i) => {
                        if this.stall_at == Some(i) {
                            futures::future::pending::<()>().await;
                        }
                        if let Some((k, error)) = &this.fail_at {
                            if *k == i {
                                guard.finished = true;
                                return Some((Err(error.clone()), (Step::Tail(usize::MAX), guard)));
                            }
                        }
                        if i == 0 && !this.first_delay.is_zero() {
                            tokio::time::sleep(this.first_delay).await;
                        }
                        if let Some(token) = this.tokens.get(i) {
                            if !this.delay.is_zero() {
                                tokio::time::sleep(this.delay).await;
                            }
                            Some((Ok(Chunk::Text(token.clone())), (Step::Token(i + 1), guard)))
                        } else {
                            this.tail(0, guard)
                        }
                    }
                    Step::Tail(n) => this.tail(n, guard),
                }
            }
        });
        Ok(stream.boxed())
    }

    fn model_id(&self) -> Option<&str> {
        self.script.model_id.as_deref()
    }

    fn provider(&self) -> Option<&str> {
        self.script.provider.as_deref()
    }
}

impl Script {
    fn tail(
        &self,
        n: usize,
        mut guard: StreamGuard,
    ) -> Option<(Result<Chunk>, (Step, StreamGuard))> {
        let tail = [
            self.usage.map(Chunk::Usage),
            self.stop.clone().map(Chunk::Stop),
        ];
        match tail
            .into_iter()
            .skip(n)
            .enumerate()
            .find_map(|(i, c)| c.map(|c| (i, c)))
        {
            Some((i, chunk)) => Some((Ok(chunk), (Step::Tail(n + i + 1), guard))),
            None => {
                guard.finished = true;
                None
            }
        }
    }
}
