//! The analyzer of the searched fields.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer,
};
use tantivy::Index;

/// The name the analyzer is registered under in every index this crate opens.
pub(crate) const NAME: &str = "rag_en";

/// Registers the analyzer on `index` (an index on disk stores only the analyzer's name).
pub(crate) fn register(index: &Index) {
    index.tokenizers().register(NAME, analyzer());
}

/// Words split on non-alphanumerics, lowercased, accents folded, English-stemmed (Porter 2),
/// then one final `s` removed.
///
/// The last step mends a known Porter inconsistency for words whose singular ends in `s`:
/// `alias` stems to `alia` but `aliases` to `alias` (likewise `status`/`statuses`), so a
/// question in the singular would miss a title in the plural. Folding the final `s` after
/// stemming maps both to `alia`.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .filter(FinalSFold)
        .build()
}

/// Removes one final `s` from tokens of four characters or more.
#[derive(Clone, Copy)]
struct FinalSFold;

impl TokenFilter for FinalSFold {
    type Tokenizer<T: Tokenizer> = FinalSFoldFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> FinalSFoldFilter<T> {
        FinalSFoldFilter(tokenizer)
    }
}

#[derive(Clone)]
struct FinalSFoldFilter<T>(T);

impl<T: Tokenizer> Tokenizer for FinalSFoldFilter<T> {
    type TokenStream<'a> = FinalSFoldStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        FinalSFoldStream(self.0.token_stream(text))
    }
}

struct FinalSFoldStream<S>(S);

impl<S: TokenStream> TokenStream for FinalSFoldStream<S> {
    fn advance(&mut self) -> bool {
        if !self.0.advance() {
            return false;
        }
        let text = &mut self.0.token_mut().text;
        if text.len() >= 4 && text.ends_with('s') {
            text.pop();
        }
        true
    }

    fn token(&self) -> &Token {
        self.0.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.0.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut a = analyzer();
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn singular_and_plural_meet() {
        for (a, b) in [
            ("alias", "aliases"),
            ("status", "statuses"),
            ("function", "Functions"),
            ("invoke", "invoking"),
            ("process", "processes"),
            ("resume", "résumé"),
        ] {
            assert_eq!(tokens(a), tokens(b), "{a} / {b}");
        }
        assert_eq!(tokens("title:memory AND (cpu)").len(), 4);
    }
}
