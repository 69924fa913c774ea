//! The app format: an [`AppDoc`] and its nodes, as they are saved and shared.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format version an app is written in: `MAJOR.MINOR`. A major version is a breaking
/// change (an app of an unknown major is refused); a minor version only adds (an app of a
/// newer minor loads, with a warning, without what this version does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FormatVersion {
    /// Breaking changes.
    pub major: u32,
    /// Additions.
    pub minor: u32,
}

impl FormatVersion {
    /// The version this library writes and reads.
    pub const CURRENT: FormatVersion = FormatVersion { major: 1, minor: 0 };
}

impl fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for FormatVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (major, minor) = s
            .split_once('.')
            .ok_or_else(|| format!("`{s}` is not MAJOR.MINOR"))?;
        let number = |part: &str| {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u32>().ok())
                .flatten()
                .ok_or_else(|| format!("`{s}` is not MAJOR.MINOR"))
        };
        Ok(FormatVersion {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

impl Serialize for FormatVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FormatVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An app: named nodes whose prompts reference each other (`{{@id}}`), saved as JSON.
///
/// The references in prompts are the only edges: there is no separate list of links that
/// could disagree with them. An app holds no credentials, only the names of retriever
/// bindings that the host resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDoc {
    /// The format version it is written in.
    pub format: FormatVersion,
    /// Its id: stable across edits, new for a fork.
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// What it does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The app it was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<Provenance>,
    /// The nodes, by id. The app's named inputs are its [`Node::Input`] nodes.
    pub nodes: BTreeMap<String, Node>,
    /// Where an editor draws each node: display only, outside the digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layout: BTreeMap<String, Position>,
}

/// Where a fork comes from: the original's id and its digest when it was forked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The original's id.
    pub id: String,
    /// The original's [`AppDoc::digest`] at the time of the fork.
    pub digest: String,
}

/// A node's place in an editor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Left, in the editor's units.
    pub x: f64,
    /// Top, in the editor's units.
    pub y: f64,
}

/// One step of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    /// A text the user fills in when the app runs (`--input id=...`).
    Input(InputNode),
    /// A fixed text, taken as written (references in it are not resolved).
    Text(TextNode),
    /// One model call on a prompt built from other nodes.
    Generate(GenerateNode),
    /// A question answered from the documents of a retriever binding by the `Pipeline`; its
    /// output carries the citations (`{{@id.citations}}`).
    Rag(RagNode),
    /// A conversation: messages seeded from other nodes, answered by a model; it can be
    /// continued after the run ([`crate::Runner::continue_chat`]).
    Chat(ChatNode),
    /// An image made by an image model from a prompt built from other nodes.
    Image(ImageNode),
}

impl Node {
    /// The kind's name, as the `kind` field spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Input(_) => "input",
            Node::Text(_) => "text",
            Node::Generate(_) => "generate",
            Node::Rag(_) => "rag",
            Node::Chat(_) => "chat",
            Node::Image(_) => "image",
        }
    }

    /// Its display title.
    pub fn title(&self) -> Option<&str> {
        match self {
            Node::Input(n) => n.title.as_deref(),
            Node::Text(n) => n.title.as_deref(),
            Node::Generate(n) => n.title.as_deref(),
            Node::Rag(n) => n.title.as_deref(),
            Node::Chat(n) => n.title.as_deref(),
            Node::Image(n) => n.title.as_deref(),
        }
    }

    /// The model it calls, if any.
    pub fn model(&self) -> Option<&str> {
        match self {
            Node::Generate(n) => Some(&n.model),
            Node::Rag(n) => Some(&n.model),
            Node::Chat(n) => Some(&n.model),
            Node::Image(n) => Some(&n.model),
            Node::Input(_) | Node::Text(_) => None,
        }
    }

    /// The kind of value it makes: an image for [`Node::Image`], a text for the others.
    pub fn output_kind(&self) -> ValueKind {
        match self {
            Node::Image(_) => ValueKind::Image,
            _ => ValueKind::Text,
        }
    }

    /// The fields a reference may name (`{{@id.field}}`), the default first.
    pub fn fields(&self) -> &'static [&'static str] {
        match self {
            Node::Image(_) => &["image"],
            Node::Rag(_) => &["text", "citations"],
            _ => &["text"],
        }
    }
}

/// Whether a value is a text or an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// A text.
    Text,
    /// An image.
    Image,
}

/// A text the user fills in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputNode {
    /// Display title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The value when none is given; without one the input is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The longest value accepted, in characters ([`InputNode::DEFAULT_MAX_CHARS`] when
    /// not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
}

impl InputNode {
    /// The longest input value accepted when `max_chars` is not set.
    pub const DEFAULT_MAX_CHARS: usize = 100_000;
}

/// A fixed text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextNode {
    /// Display title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text.
    pub text: String,
}

/// Inference settings of a node (JSON numbers are kept as `f64` so that an app's canonical
/// JSON shows them as written); what is not set is the model's default (the answer length:
/// [`Sampling::DEFAULT_MAX_TOKENS`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Temperature, `0.0..=1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Top-p, `0.0..=1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k, for the families that take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// The longest answer, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sequences that end the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl Sampling {
    /// The answer length when `max_tokens` is not set.
    pub const DEFAULT_MAX_TOKENS: u32 = 1024;

    /// The generation parameters these settings make.
    pub fn params(&self) -> rag_core::GenerationParams {
        rag_core::GenerationParams {
            temperature: self.temperature.map(|t| t as f32),
            top_p: self.top_p.map(|p| p as f32),
            top_k: self.top_k,
            max_tokens: self.max_tokens.unwrap_or(Self::DEFAULT_MAX_TOKENS),
            stop_sequences: self.stop.clone(),
        }
    }
}

/// One model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateNode {
    /// Display title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The Bedrock model id (or inference-profile id).
    pub model: String,
    /// The user message: text with references (`{{@id}}`, `{{@id.field}}`). A reference to
    /// an image node puts the image in the message, before the text.
    pub prompt: String,
    /// The system text, with text references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Inference settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub params: Sampling,
}

/// A question answered from documents by the `Pipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RagNode {
    /// Display title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The name of the retriever binding the host provides (never credentials).
    pub retriever: String,
    /// The question: text with text references.
    pub query: String,
    /// Passages to retrieve (the pipeline's default when not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// The Bedrock model id that answers.
    pub model: String,
    /// Inference settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub params: Sampling,
}

/// A conversation seeded from other nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatNode {
    /// Display title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The Bedrock model id.
    pub model: String,
    /// The system text, with text references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The seed messages, with references: from the user first, roles alternating, the last
    /// from the user.
    pub messages: Vec<SeedMessage>,
    /// Inference settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub params: Sampling,
}

/// One seed message of a [`ChatNode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedMessage {
    /// Who says it.
    pub role: rag_core::Role,
    /// What is said, with references (images only in user messages).
    pub content: String,
}

/// An image made by an image model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNode {
    /// Display title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The Bedrock image model id (Amazon Nova Canvas, Titan Image Generator v2).
    pub model: String,
    /// What to draw: text with text references.
    pub prompt: String,
    /// What not to draw: text with text references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How closely the image follows the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    /// The seed, for a repeatable image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
