//! [`TokenScheme`]: how the budget of a model is counted, as its profile names it.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use super::{CachedCounter, Cl100kCounter, ScaledCounter, SentencePieceCounter, TokenCounter};

/// How a model's tokens are counted for its budget: exactly where the model's tokenizer is
/// public and may be shipped, as a measured or published upper bound where it is not.
///
/// `docs/token-budget.md` gives, for every family, the measurement behind each factor. The
/// counters behind a scheme are built once per process and share one cache of part counts
/// ([`CachedCounter`]), since a service renders the same passages and turns again and again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TokenScheme {
    /// OpenAI's cl100k. An upper bound of Llama 3.x's own count: Llama 3's vocabulary holds
    /// all of cl100k's tokens with the same ranks, and its pre-tokenizer is the same pattern,
    /// so Llama 3 only merges further.
    Cl100k,
    /// Mistral's SentencePiece v1 model (Mistral 7B, Mixtral 8x7B), counted exactly; the same
    /// count on text for the v2 and v3 models (Mistral Large and Small 2402, Large 2407),
    /// whose extra pieces are control tokens.
    MistralV1,
    /// cl100k times a factor in thousandths, for tokenizers that are not public.
    Cl100kTimes(u32),
    /// Mistral v1 times a factor in thousandths, for SentencePiece models close to it whose
    /// tokenizer may not be shipped (Llama 2).
    MistralV1Times(u32),
}

impl TokenScheme {
    /// The counter of this scheme, shared by the whole process.
    pub fn counter(self) -> Arc<dyn TokenCounter> {
        match self {
            TokenScheme::Cl100k => cl100k(),
            TokenScheme::MistralV1 => mistral_v1(),
            TokenScheme::Cl100kTimes(per_mille) => scaled(per_mille, cl100k()),
            TokenScheme::MistralV1Times(per_mille) => scaled(per_mille, mistral_v1()),
        }
    }

    /// The factor over the base tokenizer, in thousandths (1,000 when counted as is).
    pub fn per_mille(self) -> u32 {
        match self {
            TokenScheme::Cl100k | TokenScheme::MistralV1 => 1_000,
            TokenScheme::Cl100kTimes(f) | TokenScheme::MistralV1Times(f) => f.max(1_000),
        }
    }
}

fn cl100k() -> Arc<dyn TokenCounter> {
    static COUNTER: OnceLock<Arc<CachedCounter<Cl100kCounter>>> = OnceLock::new();
    COUNTER
        .get_or_init(|| Arc::new(CachedCounter::new(Cl100kCounter::new())))
        .clone()
}

fn mistral_v1() -> Arc<dyn TokenCounter> {
    static COUNTER: OnceLock<Arc<CachedCounter<SentencePieceCounter>>> = OnceLock::new();
    COUNTER
        .get_or_init(|| Arc::new(CachedCounter::new(SentencePieceCounter::mistral_v1())))
        .clone()
}

/// A scaled counter over a shared base; the scaling is cheap, so only the base is cached.
fn scaled(per_mille: u32, base: Arc<dyn TokenCounter>) -> Arc<dyn TokenCounter> {
    Arc::new(ScaledCounter::new(base, per_mille))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_count_with_their_base_and_factor() {
        let text = "Lambda runs your code on high-availability compute infrastructure.";
        let base = Cl100kCounter::new().count(text);
        assert_eq!(TokenScheme::Cl100k.counter().count(text), base);
        assert_eq!(
            TokenScheme::Cl100kTimes(1_500).counter().count(text),
            (base * 3).div_ceil(2)
        );
        assert_eq!(TokenScheme::Cl100kTimes(1_500).per_mille(), 1_500);
        assert!(TokenScheme::MistralV1.counter().count(text) > 0);
        for scheme in [TokenScheme::Cl100k, TokenScheme::MistralV1Times(1_200)] {
            assert!(scheme.counter().splits_exactly());
        }
    }
}
