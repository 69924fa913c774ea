//! Stages an ask may run before retrieval: [`QuestionScreen`], which may block a question
//! before anything is spent on it, and [`QueryRewriter`], which turns a follow-up question into
//! a query that retrieves well on its own.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::forward::forward_async_trait;
use crate::generator::Generator;
use crate::prompt::{Message, Prompt, PromptKind};
use crate::types::{Chunk, GenerationParams, GuardrailIntervention, Turn};

/// What a [`QuestionScreen`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Screening {
    /// The question may be answered.
    Allowed,
    /// The question is blocked: no retrieval and no model call are made for it, and the
    /// answer is the intervention's message.
    Blocked(GuardrailIntervention),
}

/// Screens a question before retrieval (for example with Bedrock's ApplyGuardrail API), so a
/// blocked question costs no retrieval and no model call.
#[async_trait]
pub trait QuestionScreen: Send + Sync + Debug {
    /// Whether `question` may be answered.
    async fn screen(&self, question: &str) -> Result<Screening>;
}

forward_async_trait!(QuestionScreen {
    fn screen(&self, question: &str) -> Result<Screening>;
});

/// Rewrites a follow-up question into a standalone retrieval query from the conversation so
/// far ("now do it in CDK" after a question about a Lambda function becomes "How do I create
/// a Lambda function with the AWS CDK?").
///
/// The pipeline calls it only when the conversation has earlier turns; the model's prompt
/// still holds the question as it was asked, only retrieval sees the rewritten query.
#[async_trait]
pub trait QueryRewriter: Send + Sync + Debug {
    /// The standalone query for `question`, given the earlier turns, oldest first (never
    /// empty).
    async fn rewrite(&self, question: &str, history: &[Turn]) -> Result<String>;
}

forward_async_trait!(QueryRewriter {
    fn rewrite(&self, question: &str, history: &[Turn]) -> Result<String>;
});

/// A [`QueryRewriter`] that asks a model (any [`Generator`] taking chat prompts: a small, fast
/// one such as Claude Haiku or Amazon Nova Micro through ConverseStream) for the standalone
/// query.
///
/// The model gets an instruction as its system text and one user message holding the newest
/// turns (at most [`GeneratorRewriter::with_max_turns`], each text cut to
/// [`GeneratorRewriter::with_max_turn_chars`]) and the question, each inside its own tags;
/// the tags are removed from the texts, so a turn cannot close them. Its answer's first line,
/// trimmed and unquoted, is the query.
///
/// ```
/// # #[cfg(feature = "test-utils")] {
/// use rag_core::screen::GeneratorRewriter;
/// use rag_core::testing::ScriptedGenerator;
/// use rag_core::{QueryRewriter, Turn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let rewriter = GeneratorRewriter::new(ScriptedGenerator::new([
///     "How do I create a Lambda function with the AWS CDK?",
/// ]))?;
/// let history = [Turn::new("How do I create a Lambda function?", "Use the console [1].")];
/// let query = rewriter.rewrite("now do it in CDK", &history).await?;
/// assert_eq!(query, "How do I create a Lambda function with the AWS CDK?");
/// # Ok::<(), rag_core::Error>(())
/// # }).unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GeneratorRewriter {
    generator: std::sync::Arc<dyn Generator>,
    params: GenerationParams,
    max_turns: usize,
    max_turn_chars: usize,
}

/// The rewriter model's instruction.
const REWRITE_INSTRUCTION: &str = "You rewrite the last question of a conversation as a \
standalone search query. The query must make sense without the conversation: name the \
subjects, services and versions the question refers to. Answer with the query alone, on one \
line, without quotes or explanation. If the question already stands alone, repeat it.";

/// The tags the rewriter's message uses; removed from the texts put inside them.
const REWRITE_TAGS: [&str; 4] = ["conversation", "question", "user", "assistant"];

impl GeneratorRewriter {
    /// A rewriter on `generator`, answering with at most 200 tokens at temperature 0. Fails
    /// with [`crate::Error::Config`] when the generator does not take chat prompts.
    pub fn new(generator: impl Generator + 'static) -> Result<Self> {
        let takes = generator.accepts();
        if !PromptKind::Chat.fits(takes) {
            return Err(Error::config(format!(
                "the query rewriter sends chat prompts, but its generator takes {takes}: use a \
                 ConverseStream generator or a Claude Messages one"
            )));
        }
        Ok(GeneratorRewriter {
            generator: std::sync::Arc::new(generator),
            params: GenerationParams::default()
                .with_temperature(0.0)
                .with_max_tokens(200),
            max_turns: 4,
            max_turn_chars: 2_000,
        })
    }

    /// The settings of the rewriter's model call.
    pub fn with_params(mut self, params: GenerationParams) -> Self {
        self.params = params;
        self
    }

    /// How many of the newest turns the model sees (default 4, at least 1).
    pub fn with_max_turns(mut self, turns: usize) -> Self {
        self.max_turns = turns.max(1);
        self
    }

    /// How many characters of each question and answer the model sees (default 2,000).
    pub fn with_max_turn_chars(mut self, chars: usize) -> Self {
        self.max_turn_chars = chars.max(1);
        self
    }

    /// The prompt for `question` after `history`.
    pub fn prompt(&self, question: &str, history: &[Turn]) -> Prompt {
        let keep = history.len().min(self.max_turns);
        let mut text = String::from("<conversation>\n");
        for turn in &history[history.len() - keep..] {
            for (tag, said) in [("user", &turn.question), ("assistant", &turn.answer)] {
                text.push('<');
                text.push_str(tag);
                text.push('>');
                text.push_str(&untagged(said, self.max_turn_chars));
                text.push_str("</");
                text.push_str(tag);
                text.push_str(">\n");
            }
        }
        text.push_str("</conversation>\n<question>");
        text.push_str(&untagged(question, usize::MAX));
        text.push_str("</question>");
        Prompt::Chat {
            system: Some(REWRITE_INSTRUCTION.to_owned()),
            messages: vec![Message::user(text)],
        }
    }
}

/// `text` cut to `max_chars`, without the rewriter's tags.
fn untagged(text: &str, max_chars: usize) -> String {
    let mut text: String = match text.char_indices().nth(max_chars) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    };
    loop {
        let before = text.len();
        for tag in REWRITE_TAGS {
            for marker in [format!("<{tag}>"), format!("</{tag}>")] {
                // Case-insensitive: models read `</Question>` as the tag too.
                while let Some(at) = text.to_ascii_lowercase().find(&marker) {
                    text.replace_range(at..at + marker.len(), "");
                }
            }
        }
        // Removing one tag may join the pieces of another: repeat until none is left.
        if text.len() == before {
            return text;
        }
    }
}

#[async_trait]
impl QueryRewriter for GeneratorRewriter {
    async fn rewrite(&self, question: &str, history: &[Turn]) -> Result<String> {
        /// More than any query needs: the model is stopped past it.
        const MAX_ANSWER_BYTES: usize = 4 * 1024;
        let prompt = self.prompt(question, history);
        let mut chunks = self.generator.generate(&prompt, &self.params).await?;
        let mut answer = String::new();
        while let Some(chunk) = chunks.next().await {
            if let Chunk::Text(text) = chunk? {
                answer.push_str(&text);
                // The first line is complete once a newline follows some text.
                let text_start = answer.len() - answer.trim_start().len();
                if answer[text_start..].contains('\n') || answer.len() > MAX_ANSWER_BYTES {
                    break;
                }
            }
        }
        let line = answer
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        let query = line
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or(line)
            .trim();
        if query.is_empty() {
            return Err(Error::generation(
                "the rewriter's model answered with no query",
                false,
            ));
        }
        Ok(query.to_owned())
    }
}
