//! [`BedrockGuardrailScreen`]: a [`QuestionScreen`] over Bedrock's ApplyGuardrail API.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::types::{
    GuardrailAction, GuardrailContentBlock, GuardrailContentSource, GuardrailOutputScope,
    GuardrailTextBlock,
};
use aws_sdk_bedrockruntime::Client;
use rag_core::{Error, GuardrailIntervention, QuestionScreen, Result, Screening};
use serde_json::{json, Value};

use crate::error::{from_sdk_error, Backend};
use crate::guardrail::{assessment_json, Guardrail, GuardrailTrace};

const APPLY: &str = "ApplyGuardrail";

/// Screens questions with a Bedrock guardrail before anything else is spent on them: one
/// ApplyGuardrail call per question (`source` `INPUT`, the question as one text block,
/// <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ApplyGuardrail.html>).
///
/// An action of `GUARDRAIL_INTERVENED` blocks the question ([`Screening::Blocked`]): the
/// intervention's message is the text of the guardrail's outputs (its blocked-input
/// message), its trace `{"actionReason": ..., "assessments": [...]}` with the assessments in
/// the API's member names. Any other action allows it. With [`GuardrailTrace::EnabledFull`]
/// the call asks for the full output scope, so the assessments list what was not detected
/// too. Failures of the call are [`Error::Generation`] with the service's message, retryable
/// for throttling and server errors.
///
/// The guardrail's stream-processing mode does not apply here.
#[derive(Debug, Clone)]
pub struct BedrockGuardrailScreen {
    client: Client,
    guardrail: Guardrail,
}

impl BedrockGuardrailScreen {
    /// A builder for a screen that applies `guardrail`.
    pub fn builder(guardrail: Guardrail) -> BedrockGuardrailScreenBuilder {
        BedrockGuardrailScreenBuilder {
            guardrail,
            client: None,
        }
    }

    /// A screen with a client from the AWS environment (region, profile and credentials as
    /// `aws-config` resolves them).
    pub async fn from_env(guardrail: Guardrail) -> Result<Self> {
        let config = crate::env_config().await?;
        Self::builder(guardrail).with_sdk_config(&config).build()
    }

    /// The guardrail this screen applies.
    pub fn guardrail(&self) -> &Guardrail {
        &self.guardrail
    }
}

#[async_trait]
impl QuestionScreen for BedrockGuardrailScreen {
    async fn screen(&self, question: &str) -> Result<Screening> {
        let text = GuardrailTextBlock::builder()
            .text(question)
            .build()
            .map_err(|e| Error::invalid_input("question", e.to_string()))?;
        let scope = match self.guardrail.trace() {
            GuardrailTrace::EnabledFull => GuardrailOutputScope::Full,
            _ => GuardrailOutputScope::Interventions,
        };
        let output = self
            .client
            .apply_guardrail()
            .guardrail_identifier(self.guardrail.identifier())
            .guardrail_version(self.guardrail.version())
            .source(GuardrailContentSource::Input)
            .content(GuardrailContentBlock::Text(text))
            .output_scope(scope)
            .send()
            .await
            .map_err(|e| from_sdk_error(Backend::Generation, APPLY, e))?;
        if output.action != GuardrailAction::GuardrailIntervened {
            return Ok(Screening::Allowed);
        }
        let message: String = output
            .outputs
            .iter()
            .filter_map(|o| o.text.as_deref())
            .collect::<Vec<_>>()
            .join("\n");
        // The assessments are the trace: kept only when the trace was asked for, as on the
        // streaming paths.
        let trace = self.guardrail.traced().then(|| {
            let mut trace = json!({
                "assessments": output.assessments.iter().map(assessment_json).collect::<Vec<_>>(),
            });
            if let Some(reason) = &output.action_reason {
                trace["actionReason"] = Value::from(reason.as_str());
            }
            trace
        });
        Ok(Screening::Blocked(GuardrailIntervention {
            message: (!message.is_empty()).then_some(message),
            trace,
        }))
    }
}

/// Builds a [`BedrockGuardrailScreen`]; configuration mistakes fail at [`build`](Self::build).
#[derive(Debug)]
#[must_use]
pub struct BedrockGuardrailScreenBuilder {
    guardrail: Guardrail,
    client: Option<Client>,
}

impl BedrockGuardrailScreenBuilder {
    /// Uses this Bedrock Runtime SDK client.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the SDK client from a loaded AWS configuration.
    pub fn with_sdk_config(self, config: &SdkConfig) -> Self {
        self.with_client(Client::new(config))
    }

    /// Checks the guardrail ([`Guardrail::validate`]: an [`Error::InvalidInput`]) and the
    /// client ([`Error::Config`]) and builds the screen.
    pub fn build(self) -> Result<BedrockGuardrailScreen> {
        self.guardrail.validate()?;
        let Some(client) = self.client else {
            return Err(Error::config(
                "no Bedrock Runtime client: call with_client or with_sdk_config, or use BedrockGuardrailScreen::from_env",
            ));
        };
        Ok(BedrockGuardrailScreen {
            client,
            guardrail: self.guardrail,
        })
    }
}
