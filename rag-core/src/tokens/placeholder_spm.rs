// MERGE-SPM: replaced by the SentencePiece counter of branch `spm`.
use super::{Cl100kCounter, ScaledCounter, TokenCounter};

#[derive(Debug, Clone)]
pub struct SentencePieceCounter(ScaledCounter<Cl100kCounter>);

impl SentencePieceCounter {
    pub fn mistral_v1() -> Self {
        SentencePieceCounter(ScaledCounter::new(Cl100kCounter::new(), 1_780))
    }
}

impl TokenCounter for SentencePieceCounter {
    fn count(&self, text: &str) -> usize {
        self.0.count(text) + 1
    }
    fn count_part(&self, text: &str) -> usize {
        self.0.count(text)
    }
    fn splits_exactly(&self) -> bool {
        true
    }
    fn max_count_for_len(&self, bytes: usize) -> usize {
        self.0.max_count_for_len(bytes) + 1
    }
}
