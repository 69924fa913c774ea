//! Token counting: the [`TokenCounter`] trait, the counters of the model families, and the
//! [`TokenScheme`] a model's profile names.
//!
//! | family | counter | how far from the model's own count |
//! |---|---|---|
//! | Llama 3.x | [`Cl100kCounter`] | an upper bound, proven: Llama 3's vocabulary holds cl100k's with the same ranks and the same pre-tokenizer |
//! | Mistral 7B, Mixtral, Mistral Large/Small 2402, Large 2407 | [`SentencePieceCounter`] (Mistral's v1 model, shipped) | exact on text; `<s>`/`</s>` counted as text, above the model's one token |
//! | Llama 2 | Mistral v1 x 1.2 ([`ScaledCounter`]) | a bound measured against Llama 2's tokenizer |
//! | Claude 3+, Claude 2, Titan, other chat models | cl100k x a factor | a documented bound; the tokenizers are not public |
//!
//! `docs/token-budget.md` has the measurements behind each factor. Counting is the costly part
//! of prompt assembly, so the packer counts only what it must: a text whose length already
//! settles it needs no count ([`TokenCounter::max_count_for_len`], [`fits_by_length`]); the
//! parts of a prompt are counted one by one and, for counters that split exactly, add up to
//! the exact count ([`is_clean_split`]), so a passage's count can be cached and reused.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use crate::prompt::Prompt;

mod cl100k;
mod scaled;
mod scheme;
mod sentencepiece;
mod splits;

pub use cl100k::Cl100kCounter;
pub use scaled::ScaledCounter;
pub use scheme::TokenScheme;
pub use sentencepiece::SentencePieceCounter;
pub use splits::{is_clean_joint, is_clean_split};

/// Counts the tokens of a text for the token budget.
///
/// A counter must be consistent (the same text always has the same count) and must never count
/// more than [`TokenCounter::max_count_for_len`] says a text of that length can (one token per
/// UTF-8 byte by default, which every byte-level BPE guarantees); the packer relies on that to
/// skip counts ([`fits_by_length`]).
pub trait TokenCounter: Send + Sync + Debug {
    /// The number of tokens of `text` as the model's tokenizer counts a whole prompt that is
    /// just this text.
    fn count(&self, text: &str) -> usize;

    /// `Some(count(text))` when it is at most `limit`, `None` otherwise; a counter may stop
    /// counting as soon as the limit is passed.
    fn count_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        let n = self.count(text);
        (n <= limit).then_some(n)
    }

    /// The tokens `text` adds in the middle of a prompt, after other text. The same as
    /// [`TokenCounter::count`] unless the tokenizer treats the start of a prompt specially
    /// (SentencePiece puts a `▁` before the first character).
    fn count_part(&self, text: &str) -> usize {
        self.count(text)
    }

    /// `Some(count_part(text))` when it is at most `limit`, `None` otherwise.
    fn count_part_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        let n = self.count_part(text);
        (n <= limit).then_some(n)
    }

    /// Whether counts add up exactly across clean splits: for texts `a` and `b` that join at a
    /// clean split ([`crate::tokens::is_clean_split`]), `count(a + b) == count(a) +
    /// count_part(b)` and `count_part(a + b) == count_part(a) + count_part(b)`. True for
    /// tokenizers that never make a token across such a split (cl100k's and Llama 3's
    /// pre-tokenizer, SentencePiece models without pieces that span a line break or hold an
    /// inner space); the packer then counts a prompt part by part and is still exact.
    /// Counters that say `false` are checked by counting whole prompts.
    fn splits_exactly(&self) -> bool {
        false
    }

    /// The most tokens any text of `bytes` UTF-8 bytes counts to, for skipping counts that
    /// lengths already settle. Every byte-level BPE makes at least one byte per token, so the
    /// default is `bytes`; a counter that can count more (a scaled bound, a tokenizer that adds
    /// a token at the start) says so here.
    fn max_count_for_len(&self, bytes: usize) -> usize {
        bytes
    }

    /// What joining `tail` and `head` into `joined` changes: `count(joined) - count(tail) -
    /// count(head)`, with `tail` and `joined` counted as the start of a prompt when
    /// `at_start`, as parts otherwise. The packer asks it for the small windows around joints
    /// that are not clean splits. A bound that rounds (a [`ScaledCounter`]) overrides it to
    /// scale the inner counter's difference once, so that the sum of rounded parts and joints
    /// stays at or above the bound of the whole.
    fn joint_delta(&self, joined: &str, tail: &str, head: &str, at_start: bool) -> isize {
        let (joined, tail) = if at_start {
            (self.count(joined), self.count(tail))
        } else {
            (self.count_part(joined), self.count_part(tail))
        };
        joined as isize - tail as isize - self.count_part(head) as isize
    }
}

macro_rules! forward_counter {
    ($($ty:ty),*) => {$(
        impl<T: TokenCounter + ?Sized> TokenCounter for $ty {
            fn count(&self, text: &str) -> usize {
                (**self).count(text)
            }
            fn count_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
                (**self).count_till_limit(text, limit)
            }
            fn count_part(&self, text: &str) -> usize {
                (**self).count_part(text)
            }
            fn count_part_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
                (**self).count_part_till_limit(text, limit)
            }
            fn splits_exactly(&self) -> bool {
                (**self).splits_exactly()
            }
            fn max_count_for_len(&self, bytes: usize) -> usize {
                (**self).max_count_for_len(bytes)
            }
            fn joint_delta(&self, joined: &str, tail: &str, head: &str, at_start: bool) -> isize {
                (**self).joint_delta(joined, tail, head, at_start)
            }
        }
    )*};
}

forward_counter!(&T, Box<T>, std::sync::Arc<T>);

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

impl<C: TokenCounter> CachedCounter<C> {
    fn cached(&self, text: &str, count: impl FnOnce(&C) -> usize) -> usize {
        if text.len() > self.max_text_bytes || text.len() < 64 {
            // Long texts are rarely seen twice; short ones cost less to count than to cache.
            return count(&self.inner);
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
        let n = count(&self.inner);
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

/// Caches [`TokenCounter::count_part`], the count the packer asks for again and again (the
/// parts of prompts: passages, turns); whole-prompt counts go to the inner counter.
impl<C: TokenCounter> TokenCounter for CachedCounter<C> {
    fn count(&self, text: &str) -> usize {
        self.inner.count(text)
    }

    fn count_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        self.inner.count_till_limit(text, limit)
    }

    fn count_part(&self, text: &str) -> usize {
        self.cached(text, |inner| inner.count_part(text))
    }

    fn count_part_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        let n = self.count_part(text);
        (n <= limit).then_some(n)
    }

    fn splits_exactly(&self) -> bool {
        self.inner.splits_exactly()
    }

    fn max_count_for_len(&self, bytes: usize) -> usize {
        self.inner.max_count_for_len(bytes)
    }
}

/// The cl100k counter behind the process-wide cache that the templates share
/// ([`TokenScheme::Cl100k`]).
pub fn default_counter() -> Arc<dyn TokenCounter> {
    TokenScheme::Cl100k.counter()
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

    fn splits_exactly(&self) -> bool {
        true
    }
}

/// Whether `text` fits in `room` tokens of `counter` by its UTF-8 length alone, so that it
/// needs no count ([`TokenCounter::max_count_for_len`]).
///
/// True means it certainly fits; false means it has to be counted to know.
pub fn fits_by_length(counter: &dyn TokenCounter, text: &str, room: usize) -> bool {
    counter.max_count_for_len(text.len()) <= room
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
            assert!(fits_by_length(&counter, text, text.len()));
            assert!(!fits_by_length(&counter, text, text.len() - 1));
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
        assert_eq!(cached.count_part(&text), 50);
        assert_eq!(cached.count_part(&text), 50);
        assert_eq!(cached.inner.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Short and long texts are not cached.
        cached.count_part("short");
        cached.count_part(&"y".repeat(1_001));
        assert_eq!(cached.cached_texts(), 1);
        // Full: it starts over instead of growing.
        for i in 0..30 {
            cached.count_part(&format!("{i:03}{}", "z".repeat(97)));
        }
        assert!(cached.cached_texts() <= 20);
        let real = CachedCounter::new(Cl100kCounter::new());
        let text = "Lambda functions scale with concurrency. ".repeat(4);
        assert_eq!(real.count_part(&text), Cl100kCounter::new().count(&text));
        assert_eq!(real.count_part(&text), Cl100kCounter::new().count(&text));
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
