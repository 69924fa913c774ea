//! Token counting: the [`TokenCounter`] trait and its cl100k default, [`Cl100kCounter`].
//!
//! Bedrock does not publish the tokenizers of its models, so the budget is kept with OpenAI's
//! cl100k BPE (close to the Claude, Llama 3 and Titan counts for English text) plus a reserve
//! in [`crate::TokenBudget`] for the difference. Counting is the costly part of prompt
//! assembly, so the packer counts only what it must: a cl100k token is at least one byte, so a
//! text whose UTF-8 length already fits in the room left needs no count at all
//! ([`fits_by_length`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use crate::prompt::Prompt;

/// Counts the tokens of a text for the token budget.
///
/// A counter must be consistent (the same text always has the same count) and should never
/// count more tokens than the text has UTF-8 bytes, which every byte-level BPE guarantees; the
/// packer relies on that to skip counts ([`fits_by_length`]).
pub trait TokenCounter: Send + Sync + Debug {
    /// The number of tokens of `text`.
    fn count(&self, text: &str) -> usize;
}

impl<T: TokenCounter + ?Sized> TokenCounter for &T {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for Box<T> {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
}

impl<T: TokenCounter + ?Sized> TokenCounter for std::sync::Arc<T> {
    fn count(&self, text: &str) -> usize {
        (**self).count(text)
    }
}

/// The default counter: OpenAI's cl100k BPE from tiktoken-rs.
///
/// The BPE ranks are compiled into tiktoken-rs (nothing is downloaded) and parsed once per
/// process, on the first count. Special-token text such as `<|endoftext|>` is counted as
/// ordinary text, which is what it is in a prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cl100kCounter {
    _private: (),
}

impl Cl100kCounter {
    /// The cl100k counter.
    pub fn new() -> Self {
        Cl100kCounter::default()
    }
}

impl TokenCounter for Cl100kCounter {
    fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        // `cl100k_base_singleton` builds the BPE lazily, once per process.
        tiktoken_rs::cl100k_base_singleton().count_ordinary(text)
    }
}

/// A counter that remembers the counts of texts it has seen, in front of another counter.
///
/// A service re-renders the same texts all the time: the history of a session at every ask,
/// passages that many questions retrieve. Counting is the costly part of packing a prompt,
/// and a count is a pure function of the text, so remembering it is safe. The cache holds
/// texts of at most `max_text_bytes` (whole prompts are not worth keeping) and at most
/// `max_total_bytes` of text; when full it starts over.
#[derive(Debug)]
pub struct CachedCounter<C> {
    inner: C,
    max_text_bytes: usize,
    max_total_bytes: usize,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    counts: HashMap<Box<str>, usize>,
    bytes: usize,
}

impl<C: TokenCounter> CachedCounter<C> {
    /// Caches the counts of `inner` for texts up to 16 KiB, holding up to 8 MiB of text.
    pub fn new(inner: C) -> Self {
        CachedCounter::with_limits(inner, 16 * 1024, 8 * 1024 * 1024)
    }

    /// Caches the counts of `inner` for texts up to `max_text_bytes`, holding up to
    /// `max_total_bytes` of text.
    pub fn with_limits(inner: C, max_text_bytes: usize, max_total_bytes: usize) -> Self {
        CachedCounter {
            inner,
            max_text_bytes,
            max_total_bytes,
            cache: Mutex::default(),
        }
    }

    /// How many texts are cached.
    pub fn cached_texts(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.counts.len())
    }
}

impl<C: TokenCounter> TokenCounter for CachedCounter<C> {
    fn count(&self, text: &str) -> usize {
        if text.len() > self.max_text_bytes || text.len() < 64 {
            // Long texts are rarely seen twice; short ones cost less to count than to cache.
            return self.inner.count(text);
        }
        let hit = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.counts.get(text).copied());
        if let Some(n) = hit {
            return n;
        }
        // Counted outside the lock, so threads never wait on each other's counts.
        let n = self.inner.count(text);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.bytes + text.len() > self.max_total_bytes {
                cache.counts.clear();
                cache.bytes = 0;
            }
            if cache.counts.insert(text.into(), n).is_none() {
                cache.bytes += text.len();
            }
        }
        n
    }
}

/// The counter the family templates use unless given another: cl100k behind one cache
/// shared by the whole process.
pub fn default_counter() -> Arc<dyn TokenCounter> {
    static DEFAULT: OnceLock<Arc<CachedCounter<Cl100kCounter>>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(CachedCounter::new(Cl100kCounter::new())))
        .clone()
}

/// A counter of UTF-8 bytes: never less than a byte-level BPE's count and free to compute.
///
/// Useful for tests and as a strict, tokenizer-free budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8ByteCounter {
    _private: (),
}

impl Utf8ByteCounter {
    /// The byte counter.
    pub fn new() -> Self {
        Utf8ByteCounter::default()
    }
}

impl TokenCounter for Utf8ByteCounter {
    fn count(&self, text: &str) -> usize {
        text.len()
    }
}

/// Whether `text` fits in `room` tokens by its UTF-8 length alone, so that it needs no count.
///
/// True means it certainly fits (a token is at least one byte); false means it has to be
/// counted to know.
pub fn fits_by_length(text: &str, room: usize) -> bool {
    text.len() <= room
}

/// The tokens of a whole prompt as `counter` counts them: the text of a
/// [`Prompt::Text`], or the system text plus every message's content of a [`Prompt::Chat`].
///
/// A message API's own framing of roles is not text of the prompt and is left to the budget's
/// reserve.
pub fn count_prompt(counter: &dyn TokenCounter, prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Text(text) => counter.count(text),
        Prompt::Chat { system, messages } => {
            system.as_deref().map_or(0, |s| counter.count(s))
                + messages
                    .iter()
                    .map(|m| counter.count(&m.content))
                    .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::Message;

    #[test]
    fn cl100k_counts_known_texts() {
        let counter = Cl100kCounter::new();
        assert_eq!(counter.count(""), 0);
        assert_eq!(counter.count("hello world"), 2);
        // Special-token text is ordinary text in a prompt: more than one token.
        assert!(counter.count("<|endoftext|>") > 1);
    }

    #[test]
    fn tokens_never_exceed_bytes() {
        let counter = Cl100kCounter::new();
        for text in [
            "a",
            "The quick brown fox jumps over the lazy dog.",
            "日本語のテキストとémojis 🎉🎉",
            "<|eot_id|>[INST]<<SYS>>\n\nHuman:",
            "\u{200B}\u{200B}",
        ] {
            assert!(counter.count(text) <= text.len(), "{text:?}");
            assert!(fits_by_length(text, text.len()));
            assert!(!fits_by_length(text, text.len() - 1));
        }
    }

    #[derive(Debug, Default)]
    struct Calls(std::sync::atomic::AtomicUsize);
    impl TokenCounter for Calls {
        fn count(&self, text: &str) -> usize {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            text.len() / 2
        }
    }

    #[test]
    fn cached_counts_are_the_inner_counts_counted_once() {
        let cached = CachedCounter::with_limits(Calls::default(), 1_000, 2_000);
        let text = "x".repeat(100);
        assert_eq!(cached.count(&text), 50);
        assert_eq!(cached.count(&text), 50);
        assert_eq!(cached.inner.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Short and long texts are not cached.
        cached.count("short");
        cached.count(&"y".repeat(1_001));
        assert_eq!(cached.cached_texts(), 1);
        // Full: it starts over instead of growing.
        for i in 0..30 {
            cached.count(&format!("{i:03}{}", "z".repeat(97)));
        }
        assert!(cached.cached_texts() <= 20);
        let real = CachedCounter::new(Cl100kCounter::new());
        let text = "Lambda functions scale with concurrency. ".repeat(4);
        assert_eq!(real.count(&text), Cl100kCounter::new().count(&text));
        assert_eq!(real.count(&text), Cl100kCounter::new().count(&text));
    }

    #[test]
    fn chat_prompts_count_system_and_contents() {
        let counter = Utf8ByteCounter::new();
        let prompt = Prompt::Chat {
            system: Some("sys".into()),
            messages: vec![Message::user("hello"), Message::assistant("hi")],
        };
        assert_eq!(count_prompt(&counter, &prompt), 3 + 5 + 2);
        assert_eq!(count_prompt(&counter, &Prompt::Text("four".into())), 4);
    }
}
