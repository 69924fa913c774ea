//! Kendra result items to [`Passage`]s.

use std::collections::BTreeMap;

use aws_sdk_kendra::types::{
    DocumentAttribute, QueryResultItem, QueryResultType, RetrieveResultItem, ScoreAttributes,
    ScoreConfidence,
};
use rag_core::Passage;
use serde_json::Value;

use crate::filter::value_to_plain_json;

/// Attribute key under which a passage carries its Kendra document id.
pub const DOCUMENT_ID_ATTRIBUTE: &str = "kendra:document_id";
/// Attribute key under which a passage carries its confidence bucket (`VERY_HIGH` .. `LOW`,
/// `NOT_AVAILABLE`).
pub const CONFIDENCE_ATTRIBUTE: &str = "kendra:confidence";
/// Attribute key under which a Query API passage carries its result type (`ANSWER`,
/// `QUESTION_ANSWER`, `DOCUMENT`).
pub const RESULT_TYPE_ATTRIBUTE: &str = "kendra:result_type";
/// Attribute key under which a `QUESTION_ANSWER` passage carries the FAQ's question.
pub const QUESTION_ATTRIBUTE: &str = "kendra:question";

/// Kendra's confidence that a result is relevant, lowest first.
///
/// Kendra gives a bucket, not a number: [`Confidence::score`] maps it to the
/// [`Passage::score`] scale (1.0, 0.75, 0.5, 0.25). Buckets exist only for English content;
/// other results carry `NOT_AVAILABLE` and no score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// `LOW`.
    Low,
    /// `MEDIUM`.
    Medium,
    /// `HIGH`.
    High,
    /// `VERY_HIGH`.
    VeryHigh,
}

impl Confidence {
    /// The passage score for this bucket.
    pub fn score(self) -> f32 {
        match self {
            Confidence::VeryHigh => 1.0,
            Confidence::High => 0.75,
            Confidence::Medium => 0.5,
            Confidence::Low => 0.25,
        }
    }

    /// The bucket of a Kendra result; `None` for `NOT_AVAILABLE`, a missing bucket, or one
    /// this SDK version does not know.
    pub fn from_kendra(score: Option<&ScoreAttributes>) -> Option<Self> {
        match score?.score_confidence()? {
            ScoreConfidence::VeryHigh => Some(Confidence::VeryHigh),
            ScoreConfidence::High => Some(Confidence::High),
            ScoreConfidence::Medium => Some(Confidence::Medium),
            ScoreConfidence::Low => Some(Confidence::Low),
            _ => None,
        }
    }
}

/// A mapped passage and its bucket (for the minimum-confidence filter).
pub(crate) struct Mapped {
    pub(crate) passage: Passage,
    pub(crate) confidence: Option<Confidence>,
}

fn attributes(
    attrs: &[DocumentAttribute],
    document_id: Option<&str>,
    score: Option<&ScoreAttributes>,
) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = attrs
        .iter()
        .filter_map(|a| Some((a.key().to_owned(), value_to_plain_json(a.value()?))))
        .collect();
    if let Some(id) = document_id {
        out.insert(DOCUMENT_ID_ATTRIBUTE.into(), Value::String(id.to_owned()));
    }
    if let Some(bucket) = score.and_then(ScoreAttributes::score_confidence) {
        out.insert(
            CONFIDENCE_ATTRIBUTE.into(),
            Value::String(bucket.as_str().to_owned()),
        );
    }
    out
}

/// A Retrieve API item; `None` when it has no text.
pub(crate) fn from_retrieve(item: &RetrieveResultItem, fallback_id: String) -> Option<Mapped> {
    let text = item.content().filter(|t| !t.trim().is_empty())?;
    let confidence = Confidence::from_kendra(item.score_attributes());
    let passage = Passage {
        id: item.id().map_or(fallback_id, str::to_owned),
        text: text.to_owned(),
        title: item.document_title().map(str::to_owned),
        uri: item.document_uri().map(str::to_owned),
        score: confidence.map(Confidence::score),
        attributes: attributes(
            item.document_attributes(),
            item.document_id(),
            item.score_attributes(),
        ),
    };
    Some(Mapped {
        passage,
        confidence,
    })
}

fn additional_text<'a>(item: &'a QueryResultItem, key: &str) -> Option<&'a str> {
    item.additional_attributes()
        .iter()
        .find(|a| a.key() == key)
        .and_then(|a| a.value()?.text_with_highlights_value()?.text())
        .filter(|t| !t.trim().is_empty())
}

/// A Query API item: the answer text of `ANSWER` and `QUESTION_ANSWER` results (the excerpt
/// when there is none), the excerpt of `DOCUMENT` results; `None` when it has no text.
pub(crate) fn from_query(item: &QueryResultItem, fallback_id: String) -> Option<Mapped> {
    let excerpt = item
        .document_excerpt()
        .and_then(|e| e.text())
        .filter(|t| !t.trim().is_empty());
    let result_type = item.r#type();
    let text = match result_type {
        Some(QueryResultType::Answer | QueryResultType::QuestionAnswer) => {
            additional_text(item, "AnswerText").or(excerpt)
        }
        _ => excerpt,
    }?;
    let confidence = Confidence::from_kendra(item.score_attributes());
    let mut attrs = attributes(
        item.document_attributes(),
        item.document_id(),
        item.score_attributes(),
    );
    if let Some(t) = result_type {
        attrs.insert(
            RESULT_TYPE_ATTRIBUTE.into(),
            Value::String(t.as_str().into()),
        );
    }
    if let Some(q) = additional_text(item, "QuestionText") {
        attrs.insert(QUESTION_ATTRIBUTE.into(), Value::String(q.to_owned()));
    }
    let passage = Passage {
        id: item.id().map_or(fallback_id, str::to_owned),
        text: text.to_owned(),
        title: item
            .document_title()
            .and_then(|t| t.text())
            .map(str::to_owned),
        uri: item.document_uri().map(str::to_owned),
        score: confidence.map(Confidence::score),
        attributes: attrs,
    };
    Some(Mapped {
        passage,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use aws_sdk_kendra::types::{
        AdditionalResultAttribute, AdditionalResultAttributeValue,
        AdditionalResultAttributeValueType, DocumentAttributeValue, TextWithHighlights,
    };

    use super::*;

    fn score(c: ScoreConfidence) -> ScoreAttributes {
        ScoreAttributes::builder().score_confidence(c).build()
    }

    #[test]
    fn buckets_map_to_ordered_scores() {
        assert_eq!(
            Confidence::from_kendra(Some(&score(ScoreConfidence::VeryHigh))),
            Some(Confidence::VeryHigh)
        );
        assert_eq!(
            Confidence::from_kendra(Some(&score(ScoreConfidence::NotAvailable))),
            None
        );
        assert_eq!(Confidence::from_kendra(None), None);
        assert!(Confidence::VeryHigh > Confidence::High && Confidence::Medium > Confidence::Low);
        assert!(Confidence::High.score() > Confidence::Medium.score());
    }

    #[test]
    fn retrieve_item_maps_every_field() {
        let item = RetrieveResultItem::builder()
            .id("r1")
            .document_id("s3://b/doc.pdf")
            .document_title("Doc")
            .document_uri("https://example.com/doc")
            .content("Some text.")
            .score_attributes(score(ScoreConfidence::High))
            .document_attributes(
                DocumentAttribute::builder()
                    .key("_category")
                    .value(
                        DocumentAttributeValue::builder()
                            .string_value("guide")
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .build();
        let m = from_retrieve(&item, "fallback".into()).unwrap();
        assert_eq!(m.passage.id, "r1");
        assert_eq!(m.passage.text, "Some text.");
        assert_eq!(m.passage.title.as_deref(), Some("Doc"));
        assert_eq!(m.passage.uri.as_deref(), Some("https://example.com/doc"));
        assert_eq!(m.passage.score, Some(0.75));
        assert_eq!(m.passage.attributes["_category"], "guide");
        assert_eq!(
            m.passage.attributes[DOCUMENT_ID_ATTRIBUTE],
            "s3://b/doc.pdf"
        );
        assert_eq!(m.passage.attributes[CONFIDENCE_ATTRIBUTE], "HIGH");
        let empty = RetrieveResultItem::builder().id("r2").content("  ").build();
        assert!(from_retrieve(&empty, "x".into()).is_none());
        let no_id = RetrieveResultItem::builder().content("t").build();
        assert_eq!(
            from_retrieve(&no_id, "fallback".into()).unwrap().passage.id,
            "fallback"
        );
    }

    #[test]
    fn query_answers_use_the_answer_text() {
        let text = |t: &str| TextWithHighlights::builder().text(t).build();
        let attr = |k: &str, t: &str| {
            AdditionalResultAttribute::builder()
                .key(k)
                .value_type(AdditionalResultAttributeValueType::TextWithHighlightsValue)
                .value(
                    AdditionalResultAttributeValue::builder()
                        .text_with_highlights_value(text(t))
                        .build(),
                )
                .build()
                .unwrap()
        };
        let faq = QueryResultItem::builder()
            .id("q1")
            .r#type(QueryResultType::QuestionAnswer)
            .additional_attributes(attr("QuestionText", "What is X?"))
            .additional_attributes(attr("AnswerText", "X is Y."))
            .document_excerpt(text("excerpt"))
            .build();
        let m = from_query(&faq, "f".into()).unwrap();
        assert_eq!(m.passage.text, "X is Y.");
        assert_eq!(m.passage.attributes[QUESTION_ATTRIBUTE], "What is X?");
        assert_eq!(
            m.passage.attributes[RESULT_TYPE_ATTRIBUTE],
            "QUESTION_ANSWER"
        );
        let doc = QueryResultItem::builder()
            .id("q2")
            .r#type(QueryResultType::Document)
            .document_title(text("Title"))
            .document_excerpt(text("The excerpt."))
            .build();
        let m = from_query(&doc, "f".into()).unwrap();
        assert_eq!(m.passage.text, "The excerpt.");
        assert_eq!(m.passage.title.as_deref(), Some("Title"));
        assert_eq!(m.passage.score, None);
    }
}
