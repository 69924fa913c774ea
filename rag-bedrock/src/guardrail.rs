//! [`Guardrail`]: an Amazon Bedrock guardrail applied to a model call, and what the service
//! says when it intervenes.

use std::sync::LazyLock;

use aws_sdk_bedrockruntime::types::{
    GuardrailAssessment, GuardrailStreamConfiguration, GuardrailStreamProcessingMode,
    GuardrailTrace as SdkGuardrailTrace, GuardrailTraceAssessment, Trace,
};
use rag_core::{Error, Result};
use regex::Regex;
use serde_json::{json, Map, Value};

/// The guardrail identifier's pattern and length limit, from the InvokeModelWithResponseStream
/// and ApplyGuardrail API references
/// (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html>).
static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(([a-z0-9]+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+))$",
    )
    .expect("the pattern compiles")
});
const IDENTIFIER_MAX_LEN: usize = 2048;
/// The guardrail version's pattern: `DRAFT` or a version number from 1 to 99999999.
static VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([1-9][0-9]{0,7})|(DRAFT))$").expect("the pattern compiles"));

/// A guardrail Bedrock applies to a model call: to the prompt before the model sees it, and
/// to the answer as it streams.
///
/// Set it on a generator with [`crate::BedrockGeneratorBuilder::with_guardrail`] (both
/// InvokeModelWithResponseStream and ConverseStream), or screen questions with it through
/// [`crate::BedrockGuardrailScreen`]. When the guardrail intervenes, the answer stream ends
/// with [`rag_core::StopReason::GuardrailIntervened`].
///
/// The identifier and version are checked against the API reference's patterns when the
/// generator or screen is built ([`Guardrail::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrail {
    identifier: String,
    version: String,
    trace: GuardrailTrace,
    stream_processing: GuardrailStreamProcessing,
}

/// Whether Bedrock sends the guardrail's trace (its assessments) with the answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardrailTrace {
    /// No trace (the default): an intervention carries only the guardrail's message.
    #[default]
    Disabled,
    /// The trace of the policies that intervened.
    Enabled,
    /// The trace of every policy, those that did not intervene too.
    EnabledFull,
}

/// How a guardrail treats a streamed answer (the user guide's "Configure streaming response
/// behavior to filter content",
/// <https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-streaming.html>).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardrailStreamProcessing {
    /// The default: the guardrail checks each piece of the answer before it is sent, which
    /// delays the stream; an intervened answer holds only the guardrail's message.
    #[default]
    Sync,
    /// The answer is sent as the model writes it and checked in the background: pieces the
    /// guardrail would block may reach the caller before it intervenes. Bedrock does not mask
    /// sensitive information in this mode.
    Async,
}

impl Guardrail {
    /// The guardrail `identifier` (its id or ARN) at `version` (`"DRAFT"` or a version
    /// number such as `"1"`), with no trace and synchronous stream processing.
    pub fn new(identifier: impl Into<String>, version: impl Into<String>) -> Self {
        Guardrail {
            identifier: identifier.into(),
            version: version.into(),
            trace: GuardrailTrace::default(),
            stream_processing: GuardrailStreamProcessing::default(),
        }
    }

    /// Asks Bedrock for the guardrail's trace, which an intervention then carries.
    #[must_use]
    pub fn with_trace(mut self, trace: GuardrailTrace) -> Self {
        self.trace = trace;
        self
    }

    /// Sets how the guardrail treats a streamed answer.
    #[must_use]
    pub fn with_stream_processing(mut self, mode: GuardrailStreamProcessing) -> Self {
        self.stream_processing = mode;
        self
    }

    /// The guardrail's id or ARN.
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The guardrail's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the trace is asked for.
    pub fn trace(&self) -> GuardrailTrace {
        self.trace
    }

    /// How a streamed answer is checked.
    pub fn stream_processing(&self) -> GuardrailStreamProcessing {
        self.stream_processing
    }

    /// Checks the identifier and version against the API reference's patterns: an
    /// [`Error::InvalidInput`] for `guardrail.identifier` (empty, longer than 2048 characters,
    /// or neither a lowercase id nor a guardrail ARN) or `guardrail.version` (neither `DRAFT`
    /// nor a number from 1 to 99999999).
    pub fn validate(&self) -> Result<()> {
        if self.identifier.is_empty() {
            return Err(Error::invalid_input(
                "guardrail.identifier",
                "the guardrail identifier is empty",
            ));
        }
        if self.identifier.len() > IDENTIFIER_MAX_LEN || !IDENTIFIER.is_match(&self.identifier) {
            return Err(Error::invalid_input(
                "guardrail.identifier",
                format!(
                    "{:?} is not a guardrail id (lowercase letters and digits) or guardrail ARN \
                     of at most {IDENTIFIER_MAX_LEN} characters",
                    self.identifier
                ),
            ));
        }
        if !VERSION.is_match(&self.version) {
            return Err(Error::invalid_input(
                "guardrail.version",
                format!(
                    "{:?} is not a guardrail version: DRAFT or a number from 1 to 99999999",
                    self.version
                ),
            ));
        }
        Ok(())
    }

    /// Whether the trace is asked for at all.
    pub(crate) fn traced(&self) -> bool {
        self.trace != GuardrailTrace::Disabled
    }

    /// The `X-Amzn-Bedrock-Trace` value of InvokeModelWithResponseStream.
    pub(crate) fn invoke_trace(&self) -> Trace {
        match self.trace {
            GuardrailTrace::Disabled => Trace::Disabled,
            GuardrailTrace::Enabled => Trace::Enabled,
            GuardrailTrace::EnabledFull => Trace::EnabledFull,
        }
    }

    /// ConverseStream's `guardrailConfig`.
    pub(crate) fn converse_config(&self) -> GuardrailStreamConfiguration {
        GuardrailStreamConfiguration::builder()
            .guardrail_identifier(&self.identifier)
            .guardrail_version(&self.version)
            .trace(match self.trace {
                GuardrailTrace::Disabled => SdkGuardrailTrace::Disabled,
                GuardrailTrace::Enabled => SdkGuardrailTrace::Enabled,
                GuardrailTrace::EnabledFull => SdkGuardrailTrace::EnabledFull,
            })
            .stream_processing_mode(match self.stream_processing {
                GuardrailStreamProcessing::Sync => GuardrailStreamProcessingMode::Sync,
                GuardrailStreamProcessing::Async => GuardrailStreamProcessingMode::Async,
            })
            .build()
    }

    /// Adds `"amazon-bedrock-guardrailConfig": {"streamProcessingMode": "ASYNCHRONOUS"}` to a
    /// native request body in asynchronous mode ("Enabling asynchronous mode" in
    /// <https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-streaming.html>).
    /// Synchronous processing is the service's default and needs no field.
    ///
    /// The body is a JSON object written by this crate, so the field is spliced in before its
    /// closing brace rather than parsing and rewriting a body that may be tens of kilobytes.
    pub(crate) fn add_to_native_body(&self, body: &mut Vec<u8>) -> Result<()> {
        if self.stream_processing != GuardrailStreamProcessing::Async {
            return Ok(());
        }
        let field = br#""amazon-bedrock-guardrailConfig":{"streamProcessingMode":"ASYNCHRONOUS"}}"#;
        while body.last().is_some_and(u8::is_ascii_whitespace) {
            body.pop();
        }
        if body.pop() != Some(b'}') {
            return Err(Error::generation(
                "the request body is not a JSON object: the guardrail's field cannot be added",
                false,
            ));
        }
        let empty = body
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        if !empty {
            body.push(b',');
        }
        body.extend_from_slice(field);
        Ok(())
    }
}

/// A native chunk's key saying what the guardrail did (`INTERVENED` or `NONE`).
pub(crate) const NATIVE_ACTION_KEY: &str = "amazon-bedrock-guardrailAction";
/// A native chunk's key holding the trace (`{"guardrail": {...}}`).
pub(crate) const NATIVE_TRACE_KEY: &str = "amazon-bedrock-trace";

/// ConverseStream's guardrail trace (`metadata.trace.guardrail`) as JSON, in the API's own
/// member names (`modelOutput`, `inputAssessment`, `outputAssessments`, `actionReason`).
pub(crate) fn trace_assessment_json(trace: &GuardrailTraceAssessment) -> Value {
    let mut out = Map::new();
    if let Some(output) = &trace.model_output {
        out.insert("modelOutput".into(), json!(output));
    }
    if let Some(input) = &trace.input_assessment {
        let map: Map<String, Value> = input
            .iter()
            .map(|(k, a)| (k.clone(), assessment_json(a)))
            .collect();
        out.insert("inputAssessment".into(), Value::Object(map));
    }
    if let Some(outputs) = &trace.output_assessments {
        let map: Map<String, Value> = outputs
            .iter()
            .map(|(k, list)| {
                (
                    k.clone(),
                    Value::Array(list.iter().map(assessment_json).collect()),
                )
            })
            .collect();
        out.insert("outputAssessments".into(), Value::Object(map));
    }
    if let Some(reason) = &trace.action_reason {
        out.insert("actionReason".into(), json!(reason));
    }
    Value::Object(out)
}

/// One guardrail assessment as JSON in the API's member names (`topicPolicy`,
/// `contentPolicy`, `wordPolicy`, `sensitiveInformationPolicy`, `contextualGroundingPolicy`),
/// each finding with its action and whether it was detected. The SDK's types are not serde;
/// the automated-reasoning findings and the metrics are left out.
pub(crate) fn assessment_json(a: &GuardrailAssessment) -> Value {
    let mut out = Map::new();
    if let Some(p) = &a.topic_policy {
        let topics: Vec<Value> = p
            .topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.r#type.as_str(),
                    "action": t.action.as_str(),
                    "detected": t.detected,
                })
            })
            .collect();
        out.insert("topicPolicy".into(), json!({ "topics": topics }));
    }
    if let Some(p) = &a.content_policy {
        let filters: Vec<Value> = p
            .filters
            .iter()
            .map(|f| {
                json!({
                    "type": f.r#type.as_str(),
                    "confidence": f.confidence.as_str(),
                    "filterStrength": f.filter_strength.as_ref().map(|s| s.as_str()),
                    "action": f.action.as_str(),
                    "detected": f.detected,
                })
            })
            .collect();
        out.insert("contentPolicy".into(), json!({ "filters": filters }));
    }
    if let Some(p) = &a.word_policy {
        let custom: Vec<Value> = p
            .custom_words
            .iter()
            .map(|w| json!({ "match": w.r#match, "action": w.action.as_str(), "detected": w.detected }))
            .collect();
        let managed: Vec<Value> = p
            .managed_word_lists
            .iter()
            .map(|w| {
                json!({
                    "match": w.r#match,
                    "type": w.r#type.as_str(),
                    "action": w.action.as_str(),
                    "detected": w.detected,
                })
            })
            .collect();
        out.insert(
            "wordPolicy".into(),
            json!({ "customWords": custom, "managedWordLists": managed }),
        );
    }
    if let Some(p) = &a.sensitive_information_policy {
        let pii: Vec<Value> = p
            .pii_entities
            .iter()
            .map(|e| {
                json!({
                    "match": e.r#match,
                    "type": e.r#type.as_str(),
                    "action": e.action.as_str(),
                    "detected": e.detected,
                })
            })
            .collect();
        let regexes: Vec<Value> = p
            .regexes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "match": r.r#match,
                    "regex": r.regex,
                    "action": r.action.as_str(),
                    "detected": r.detected,
                })
            })
            .collect();
        out.insert(
            "sensitiveInformationPolicy".into(),
            json!({ "piiEntities": pii, "regexes": regexes }),
        );
    }
    if let Some(p) = &a.contextual_grounding_policy {
        let filters: Vec<Value> = p
            .filters
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|f| {
                json!({
                    "type": f.r#type.as_str(),
                    "threshold": f.threshold,
                    "score": f.score,
                    "action": f.action.as_str(),
                    "detected": f.detected,
                })
            })
            .collect();
        out.insert(
            "contextualGroundingPolicy".into(),
            json!({ "filters": filters }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_versions_follow_the_api_patterns() {
        let good = [
            ("abc123xyz", "DRAFT"),
            ("abc123xyz", "1"),
            ("abc123xyz", "99999999"),
            (
                "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123xyz",
                "2",
            ),
            (
                "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:guardrail/g1",
                "DRAFT",
            ),
        ];
        for (id, version) in good {
            Guardrail::new(id, version).validate().unwrap();
        }
        let bad = [
            ("", "DRAFT", "guardrail.identifier"),
            ("ABC", "DRAFT", "guardrail.identifier"),
            ("my-guardrail", "DRAFT", "guardrail.identifier"),
            (
                "arn:aws:bedrock:us-east-1:12345:guardrail/abc",
                "1",
                "guardrail.identifier",
            ),
            ("abc", "", "guardrail.version"),
            ("abc", "draft", "guardrail.version"),
            ("abc", "0", "guardrail.version"),
            ("abc", "01", "guardrail.version"),
            ("abc", "123456789", "guardrail.version"),
            ("abc", "1.0", "guardrail.version"),
        ];
        for (id, version, expected) in bad {
            let err = Guardrail::new(id, version).validate().unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { field, .. } if field == expected),
                "{id:?} {version:?}: {err}"
            );
        }
        let long = "a".repeat(IDENTIFIER_MAX_LEN + 1);
        assert!(Guardrail::new(long, "1").validate().is_err());
    }

    #[test]
    fn asynchronous_mode_adds_the_body_field_and_synchronous_mode_nothing() {
        let sync = Guardrail::new("g", "1");
        let mut body = br#"{"prompt":"hi"}"#.to_vec();
        sync.add_to_native_body(&mut body).unwrap();
        assert_eq!(body, br#"{"prompt":"hi"}"#);
        let async_ = sync.with_stream_processing(GuardrailStreamProcessing::Async);
        for original in [&br#"{"prompt":"hi"}"#[..], b"{}", b"{ }\n"] {
            let mut body = original.to_vec();
            async_.add_to_native_body(&mut body).unwrap();
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                value["amazon-bedrock-guardrailConfig"],
                json!({"streamProcessingMode": "ASYNCHRONOUS"}),
                "{}",
                String::from_utf8_lossy(original)
            );
        }
        let mut not_an_object = b"[1]".to_vec();
        assert!(async_.add_to_native_body(&mut not_an_object).is_err());
    }
}
