//! [`Cl100kCounter`]: OpenAI's cl100k BPE.

use super::TokenCounter;

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
    fn splits_exactly(&self) -> bool {
        true
    }

    fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        // `cl100k_base_singleton` builds the BPE lazily, once per process.
        tiktoken_rs::cl100k_base_singleton().count_ordinary(text)
    }
}
