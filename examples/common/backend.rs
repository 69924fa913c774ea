//! The backend flags shared by the chat and WebSocket examples, and the pipeline they build.
//!
//! Without `--model` the pipeline is the offline one (extractive generator); with it, a
//! Bedrock model of any family, or with `--openai-url URL` a model of that name on an
//! OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio; the `openai` feature). The retriever is the local index (default), a Kendra index or
//! a Bedrock knowledge base; the history lives in memory (default) or in DynamoDB. The AWS
//! pieces need the crate's AWS features (`--features full`).

// Shared by several examples; each uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;
use rag::memory::{ExtractiveGenerator, ExtractiveTemplate, InMemoryHistory, TantivyRetriever};
use rag::model::default_reserve;
use rag::{GenerationParams, HistoryStore, ModelFamily, ModelProfile, Pipeline, Route};

use super::docs;
use super::openai::LocalModel;

/// Where passages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RetrieverKind {
    /// A local tantivy index of `--docs` (default: this project's documentation).
    Local,
    /// An Amazon Kendra index (`--kendra-index`).
    Kendra,
    /// An Amazon Bedrock knowledge base (`--knowledge-base`).
    Kb,
    /// No retriever: a plain ask-the-model bot.
    None,
}

/// Where the conversation history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HistoryKind {
    /// In this process.
    Memory,
    /// An Amazon DynamoDB table (`--table`).
    Dynamodb,
}

/// The flags that choose the backends.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackendArgs {
    /// A Bedrock model id or inference-profile id; its family (Claude, Llama, Titan,
    /// Mistral, or a chat model behind ConverseStream), prompt format and limits come from
    /// the model table. An id the table does not list (a custom or imported model) needs
    /// --context-window, and is called as a chat model through ConverseStream.
    /// With --openai-url, the model's name on that server instead.
    #[arg(long, value_name = "MODEL_ID")]
    pub(crate) model: Option<String>,
    /// Call the model on the OpenAI-compatible server at this base URL (for example
    /// http://127.0.0.1:11434/v1 for Ollama) instead of Bedrock; --model names it there, and
    /// --context-window gives its window (default 8192). Needs the `openai` feature.
    #[arg(long, value_name = "URL")]
    pub(crate) openai_url: Option<String>,
    /// The key sent as a Bearer token to the --openai-url server, for servers that ask for one.
    #[arg(
        long,
        value_name = "KEY",
        env = "OPENAI_API_KEY",
        hide_env_values = true
    )]
    pub(crate) api_key: Option<String>,
    /// Call ConverseStream instead of the family's native API (any chat model on Bedrock),
    /// with a chat prompt.
    #[arg(long)]
    pub(crate) converse: bool,
    /// The model's context window in tokens, for custom or imported models, or to override
    /// the table's. It must leave room for --max-tokens.
    #[arg(long, value_name = "N")]
    pub(crate) context_window: Option<usize>,
    /// Where passages come from.
    #[arg(long, value_enum, default_value_t = RetrieverKind::Local)]
    pub(crate) retriever: RetrieverKind,
    /// Folders of Markdown and text files for the local index (repeatable; default: this
    /// project's documentation).
    #[arg(long, value_name = "DIR")]
    pub(crate) docs: Vec<PathBuf>,
    /// The Kendra index id, for `--retriever kendra`.
    #[arg(long, value_name = "ID")]
    pub(crate) kendra_index: Option<String>,
    /// The knowledge base id, for `--retriever kb`.
    #[arg(long, value_name = "ID")]
    pub(crate) knowledge_base: Option<String>,
    /// Where the conversation history is kept.
    #[arg(long, value_enum, default_value_t = HistoryKind::Memory)]
    pub(crate) history: HistoryKind,
    /// The DynamoDB table, for `--history dynamodb`.
    #[arg(long, value_name = "NAME")]
    pub(crate) table: Option<String>,
    /// Create the DynamoDB table (on-demand billing) if it does not exist.
    #[arg(long)]
    pub(crate) create_table: bool,
    /// The AWS region (default: the AWS environment's, as the AWS CLI resolves it).
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Passages retrieved per question.
    #[arg(long, default_value_t = 10)]
    pub(crate) top_k: usize,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = 1024)]
    pub(crate) max_tokens: u32,
    /// A Bedrock guardrail (its id or ARN) applied to the --model's answers, on either API.
    #[arg(long, value_name = "ID")]
    pub(crate) guardrail_id: Option<String>,
    /// The guardrail's version: a number, or DRAFT.
    #[arg(
        long,
        value_name = "VERSION",
        default_value = "DRAFT",
        requires = "guardrail_id"
    )]
    pub(crate) guardrail_version: String,
    /// Check every question with the guardrail (ApplyGuardrail) before retrieval: a blocked
    /// question costs no retrieval and no model call.
    #[arg(long, requires = "guardrail_id")]
    pub(crate) screen_questions: bool,
    /// Put a prompt-cache point after the system text and passages, for the Bedrock models
    /// that take one (docs/prompt-caching.md).
    #[arg(long)]
    pub(crate) prompt_caching: bool,
    /// A small Bedrock model (for example amazon.nova-micro-v1:0) that rewrites follow-up
    /// questions into standalone queries before retrieval, through ConverseStream.
    #[arg(long, value_name = "MODEL_ID")]
    pub(crate) rewrite_model: Option<String>,
}

/// A setup failure: a message for the user and the exit code.
#[derive(Debug)]
pub(crate) struct Fatal {
    /// What went wrong, in plain words.
    pub(crate) message: String,
    /// 2 for configuration, credentials and region problems; 1 otherwise.
    pub(crate) code: u8,
}

impl Fatal {
    /// A configuration problem (exit code 2).
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<rag::Error> for Fatal {
    fn from(e: rag::Error) -> Self {
        Fatal::config(e.to_string())
    }
}

/// The Bedrock model the flags name, resolved before anything is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModelChoice {
    /// What the generator calls and the budget counts: the table's profile (its window
    /// replaced by `--context-window`), or a custom chat model's; with `--converse`, on
    /// ConverseStream with a chat prompt.
    pub(crate) profile: ModelProfile,
    /// The longest answer: `--max-tokens`, at most the model's answer limit.
    pub(crate) max_tokens: u32,
    /// Whether `--context-window` set the window.
    pub(crate) window_given: bool,
}

/// The pipeline and a one-line description of what it is made of.
pub(crate) struct Built {
    /// The pipeline.
    pub(crate) pipeline: Pipeline,
    /// For example `local index, in-memory history, extractive generator (offline)`.
    pub(crate) description: String,
    /// The pipeline's history store, for services that check a session's owner before a
    /// resume.
    pub(crate) history: Arc<dyn HistoryStore>,
    /// The folders the local index read (empty for other retrievers): its passages' `uri`s
    /// are paths under them.
    pub(crate) doc_roots: Vec<PathBuf>,
}

impl BackendArgs {
    /// Whether any AWS service is used.
    pub(crate) fn uses_aws(&self) -> bool {
        (self.model.is_some() && self.openai_url.is_none())
            || self.rewrite_model.is_some()
            || matches!(self.retriever, RetrieverKind::Kendra | RetrieverKind::Kb)
            || self.history == HistoryKind::Dynamodb
    }

    /// Checks the flags that go together, and resolves the model, before anything is loaded
    /// (so a model the example cannot budget for is refused before any AWS call).
    fn check(&self) -> Result<Option<ModelChoice>, Fatal> {
        if self.openai_url.is_some() && self.model.is_none() {
            return Err(Fatal::config(
                "--openai-url needs --model NAME (the model's name on that server)",
            ));
        }
        if self.openai_url.is_some() && self.converse {
            return Err(Fatal::config(
                "--converse applies to Bedrock models, not to --openai-url",
            ));
        }
        if self.guardrail_id.is_some() && (self.model.is_none() || self.openai_url.is_some()) {
            return Err(Fatal::config(
                "--guardrail-id applies to a Bedrock --model (guardrails are Bedrock's)",
            ));
        }
        // An identifier or version Bedrock would refuse is named before anything is loaded.
        #[cfg(feature = "bedrock")]
        if let Some(id) = &self.guardrail_id {
            rag::bedrock::Guardrail::new(id.clone(), self.guardrail_version.clone()).validate()?;
        }
        if self.prompt_caching && (self.model.is_none() || self.openai_url.is_some()) {
            return Err(Fatal::config(
                "--prompt-caching applies to a Bedrock --model",
            ));
        }
        if self.converse && self.model.is_none() {
            return Err(Fatal::config("--converse needs --model"));
        }
        if self.context_window.is_some() && self.model.is_none() {
            return Err(Fatal::config(
                "--context-window needs --model (the offline generator has no window)",
            ));
        }
        if self.retriever == RetrieverKind::Kendra && self.kendra_index.is_none() {
            return Err(Fatal::config("--retriever kendra needs --kendra-index ID"));
        }
        if self.retriever == RetrieverKind::Kb && self.knowledge_base.is_none() {
            return Err(Fatal::config("--retriever kb needs --knowledge-base ID"));
        }
        if self.history == HistoryKind::Dynamodb && self.table.is_none() {
            return Err(Fatal::config("--history dynamodb needs --table NAME"));
        }
        if self.retriever != RetrieverKind::Local && !self.docs.is_empty() {
            return Err(Fatal::config("--docs applies to --retriever local"));
        }
        if self.model.is_none() && self.retriever == RetrieverKind::None {
            return Err(Fatal::config(
                "the offline generator answers from passages: use a retriever, or --model",
            ));
        }
        self.model_choice()
    }

    /// The profile of `--model` as `--context-window` and `--converse` adjust it, and the
    /// answer limit; `None` without `--model`.
    fn model_choice(&self) -> Result<Option<ModelChoice>, Fatal> {
        let Some(model) = &self.model else {
            return Ok(None);
        };
        if let Some(local) = self.local_model()? {
            return Ok(Some(ModelChoice {
                profile: local.profile,
                max_tokens: local.max_tokens,
                window_given: self.context_window.is_some(),
            }));
        }
        let mut profile = match (ModelProfile::for_model_id(model), self.context_window) {
            (Ok(profile), None) => profile,
            // The profile is non-exhaustive: change the copy the table gave.
            (Ok(mut profile), Some(window)) => {
                profile.context_window = window;
                profile
            }
            // A custom or imported model: ConverseStream takes one chat request for all of
            // them, so only the window and the answer limit are needed.
            (Err(_), Some(window)) => {
                ModelProfile::custom(ModelFamily::Chat, window, self.max_tokens as usize)
            }
            (Err(error), None) => {
                let message = match error {
                    rag::Error::Config { message, .. } => message,
                    other => other.to_string(),
                };
                return Err(Fatal::config(format!(
                    "{message}\nhint: for a custom or imported model, pass --context-window N \
                     (the model's context window in tokens); it is then called as a chat model \
                     through ConverseStream"
                )));
            }
        };
        if self.converse {
            profile = on_converse(profile);
        }
        let max_tokens = self
            .max_tokens
            .min(u32::try_from(profile.max_output_tokens).unwrap_or(u32::MAX));
        if let Some(window) = self.context_window {
            // The pipeline's own rule (a prompt budget of window - answer - reserve), said in
            // flags before anything loads.
            let reserve = default_reserve(window);
            if window <= max_tokens as usize + reserve {
                return Err(Fatal::config(format!(
                    "--context-window {window} leaves no room for a prompt: it must be more \
                     than --max-tokens {max_tokens} plus a reserve of {reserve} tokens (1% of \
                     the window, at least 16)"
                )));
            }
        }
        Ok(Some(ModelChoice {
            profile,
            max_tokens,
            window_given: self.context_window.is_some(),
        }))
    }

    /// The model on the `--openai-url` server, checked; `None` without the flag.
    fn local_model(&self) -> Result<Option<LocalModel>, Fatal> {
        match (&self.openai_url, &self.model) {
            (Some(url), Some(model)) => LocalModel::new(
                url,
                model,
                self.api_key.as_deref(),
                self.context_window,
                self.max_tokens,
            )
            .map(Some)
            .map_err(Fatal::config),
            _ => Ok(None),
        }
    }

    /// Builds the pipeline these flags describe. With AWS pieces, it first checks that a
    /// region is set and that credentials can be found, so a missing account is reported
    /// before the first question.
    pub(crate) async fn build(&self) -> Result<Built, Fatal> {
        let choice = self.check()?;
        let mut parts = Vec::new();
        let aws = if self.uses_aws() {
            Some(aws::Aws::load(self.region.as_deref()).await?)
        } else {
            None
        };
        let mut builder = Pipeline::builder().with_top_k(self.top_k);
        let mut doc_roots = Vec::new();
        builder = match self.retriever {
            RetrieverKind::Local => {
                doc_roots = if self.docs.is_empty() {
                    vec![docs::project_root().to_path_buf()]
                } else {
                    self.docs.clone()
                };
                let index = TantivyRetriever::in_memory()?;
                let (files, passages) =
                    docs::index_docs(&index, &self.docs).map_err(Fatal::config)?;
                parts.push(format!(
                    "local index ({passages} passages from {files} files)"
                ));
                builder.with_retriever(index)
            }
            RetrieverKind::None => {
                parts.push("no retriever".into());
                builder
            }
            RetrieverKind::Kendra | RetrieverKind::Kb => {
                let aws = aws
                    .as_ref()
                    .ok_or_else(|| Fatal::config("AWS is not loaded"))?;
                let (builder, what) = aws.retriever(self, builder)?;
                parts.push(what);
                builder
            }
        };
        let history: Arc<dyn HistoryStore> = match self.history {
            HistoryKind::Memory => {
                parts.push("in-memory history".into());
                Arc::new(InMemoryHistory::new())
            }
            HistoryKind::Dynamodb => {
                let aws = aws
                    .as_ref()
                    .ok_or_else(|| Fatal::config("AWS is not loaded"))?;
                let (history, what) = aws.history(self).await?;
                parts.push(what);
                history
            }
        };
        builder = builder.with_history(Arc::clone(&history));
        builder = match (&self.model, choice, &aws) {
            _ if self.openai_url.is_some() => {
                let local = self
                    .local_model()?
                    .ok_or_else(|| Fatal::config("--openai-url needs --model NAME"))?;
                let (builder, what) = local.configure(builder).map_err(Fatal::config)?;
                parts.push(what);
                builder
            }
            (Some(model), Some(choice), Some(aws)) => {
                let (builder, what) = aws.generator(self, model, choice, builder)?;
                parts.push(what);
                builder
            }
            _ => {
                let params = GenerationParams::default().with_max_tokens(self.max_tokens);
                parts.push("extractive generator (offline)".into());
                builder
                    .with_template(ExtractiveTemplate::new())
                    .with_generator(ExtractiveGenerator::new())
                    .with_params(params)
            }
        };
        if let Some(aws) = &aws {
            let (extended, extras) = aws.stages(self, builder)?;
            builder = extended;
            parts.extend(extras);
        }
        Ok(Built {
            pipeline: builder.build()?,
            description: parts.join(", "),
            history,
            doc_roots,
        })
    }
}

/// The profile called through ConverseStream (`--converse`): a text family's prompt becomes a
/// chat prompt, framed as chat models are; Claude's Messages prompt already is one.
fn on_converse(mut profile: ModelProfile) -> ModelProfile {
    profile.route = Route::Converse;
    if profile.family.is_text() {
        profile.family = ModelFamily::Chat;
        profile.framing = ModelFamily::Chat.default_framing();
    }
    profile
}

/// A plain explanation of an error (its message and causes), with a hint at what usually
/// fixes it.
pub(crate) fn explain(error: &rag::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    let hint = if lower.contains("chat completions:") {
        // The --openai-url server's failures, not AWS's.
        if ["could not connect", "got no response", "timed out"]
            .iter()
            .any(|s| lower.contains(s))
        {
            Some("the model server could not be reached: check that it runs and that --openai-url is its base URL (for example http://127.0.0.1:11434/v1)")
        } else if ["http 401", "http 403"].iter().any(|s| lower.contains(s)) {
            Some("the model server refused the key: check --api-key (or OPENAI_API_KEY)")
        } else if lower.contains("http 404") {
            Some("check the model name (--model) and that the server serves it under --openai-url")
        } else {
            None
        }
    } else if ["unrecognizedclient", "security token", "signature"]
        .iter()
        .any(|s| lower.contains(s))
    {
        Some("AWS refused the credentials: check them, and that they belong to this region's partition")
    } else if [
        "accessdenied",
        "access denied",
        "not authorized",
        "don't have access",
    ]
    .iter()
    .any(|s| lower.contains(s))
    {
        Some("check the IAM permissions, and that access to this model is enabled in the Bedrock console for this region")
    } else if [
        "dispatch failure",
        "dns error",
        "failed to lookup",
        "connection refused",
        "timed out",
    ]
    .iter()
    .any(|s| lower.contains(s))
    {
        Some("the AWS service could not be reached: check the network and that the region is right and offers the service")
    } else if [
        "resourcenotfound",
        "not found",
        "model identifier is invalid",
    ]
    .iter()
    .any(|s| lower.contains(s))
    {
        Some("check the id (model, index, knowledge base or table) and that it exists in this region")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{text}\nhint: {hint}"),
        None => text,
    }
}

#[cfg(all(
    feature = "bedrock",
    feature = "knowledge-bases",
    feature = "kendra",
    feature = "dynamodb"
))]
mod aws {
    //! The AWS pieces.

    use std::sync::Arc;
    use std::time::Duration;

    use rag::bedrock::sdk::aws_config::{self, BehaviorVersion, Region, SdkConfig};
    use rag::bedrock::sdk::bedrockruntime::config::ProvideCredentials;
    use rag::bedrock::{
        BedrockGenerator, BedrockGuardrailScreen, Guardrail, KnowledgeBaseRetriever,
    };
    use rag::dynamodb::DynamoDbHistory;
    use rag::kendra::KendraRetriever;
    use rag::{
        template_for_profile, GenerationParams, GeneratorRewriter, HistoryStore, PipelineBuilder,
    };

    use super::{BackendArgs, Fatal, ModelChoice, RetrieverKind};

    /// The AWS configuration, checked.
    pub(super) struct Aws {
        config: SdkConfig,
    }

    impl Aws {
        /// Loads the AWS configuration and checks that it has a region and credentials.
        pub(super) async fn load(region: Option<&str>) -> Result<Self, Fatal> {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(region) = region {
                loader = loader.region(Region::new(region.to_string()));
            }
            let config = loader.load().await;
            let Some(region) = config.region() else {
                return Err(Fatal::config(
                    "no AWS region: pass --region, set AWS_REGION, or set a region in your AWS profile",
                ));
            };
            check_region(region.as_ref())?;
            let Some(provider) = config.credentials_provider() else {
                return Err(Fatal::config("no AWS credentials provider is configured"));
            };
            match tokio::time::timeout(Duration::from_secs(15), provider.provide_credentials())
                .await
            {
                Ok(Ok(_)) => Ok(Aws { config }),
                Ok(Err(e)) => Err(Fatal::config(format!(
                    "no AWS credentials were found ({e}). Set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, choose a profile with AWS_PROFILE, or sign in with \
                     `aws sso login`."
                ))),
                Err(_) => Err(Fatal::config(
                    "looking for AWS credentials took longer than 15 s; check your AWS profile",
                )),
            }
        }

        /// The region in use.
        pub(super) fn region(&self) -> String {
            self.config
                .region()
                .map(|r| r.to_string())
                .unwrap_or_default()
        }

        pub(super) fn retriever(
            &self,
            args: &BackendArgs,
            builder: PipelineBuilder,
        ) -> Result<(PipelineBuilder, String), Fatal> {
            Ok(match args.retriever {
                RetrieverKind::Kendra => {
                    let id = args.kendra_index.clone().unwrap_or_default();
                    let retriever = KendraRetriever::builder()
                        .with_sdk_config(&self.config)
                        .with_index_id(id.clone())
                        .build()?;
                    (
                        builder.with_retriever(retriever),
                        format!("Kendra index {id}"),
                    )
                }
                _ => {
                    let id = args.knowledge_base.clone().unwrap_or_default();
                    let retriever = KnowledgeBaseRetriever::builder(id.clone())
                        .with_sdk_config(&self.config)
                        .build()?;
                    (
                        builder.with_retriever(retriever),
                        format!("knowledge base {id}"),
                    )
                }
            })
        }

        pub(super) async fn history(
            &self,
            args: &BackendArgs,
        ) -> Result<(Arc<dyn HistoryStore>, String), Fatal> {
            let table = args.table.clone().unwrap_or_default();
            let history = DynamoDbHistory::builder(table.clone())
                .with_sdk_config(&self.config)
                .build()?;
            if args.create_table {
                history.create_table_if_missing().await.map_err(|e| Fatal {
                    message: format!("cannot create table {table}: {}", super::explain(&e)),
                    code: 1,
                })?;
            }
            Ok((Arc::new(history), format!("DynamoDB table {table}")))
        }

        /// The Bedrock generator of `choice`, with the pipeline's template, limits and
        /// default answer length from its profile.
        pub(super) fn generator(
            &self,
            args: &BackendArgs,
            model: &str,
            choice: ModelChoice,
            builder: PipelineBuilder,
        ) -> Result<(PipelineBuilder, String), Fatal> {
            let ModelChoice {
                profile,
                max_tokens,
                window_given,
            } = choice;
            // The profile decides the API: the table's route, ConverseStream for custom
            // models and with --converse.
            let mut generator = BedrockGenerator::builder(model)
                .with_profile(profile)
                .with_sdk_config(&self.config);
            if let Some(guardrail) = guardrail(args) {
                generator = generator.with_guardrail(guardrail);
            }
            generator = generator.with_prompt_caching(args.prompt_caching);
            let generator = generator.build()?;
            let window = format!("context window {} tokens", profile.context_window);
            let how = match (generator.is_converse(), window_given) {
                (true, false) => "through ConverseStream".to_string(),
                (true, true) => format!("through ConverseStream ({window})"),
                (false, false) => format!("({} format)", profile.family),
                (false, true) => format!("({} format, {window})", profile.family),
            };
            let what = format!("Bedrock {model} {how} in {}", self.region());
            let builder = builder
                .with_model_profile(profile)
                .with_template(template_for_profile(&profile))
                .with_generator(generator)
                .with_params(GenerationParams::default().with_max_tokens(max_tokens));
            let what = match &args.guardrail_id {
                Some(id) => format!("{what}, guardrail {id} version {}", args.guardrail_version),
                None => what,
            };
            Ok((builder, what))
        }

        /// The stages before retrieval: the question screen (`--screen-questions`) and the
        /// follow-up rewriter (`--rewrite-model`).
        pub(super) fn stages(
            &self,
            args: &BackendArgs,
            mut builder: PipelineBuilder,
        ) -> Result<(PipelineBuilder, Vec<String>), Fatal> {
            let mut parts = Vec::new();
            if let (true, Some(guardrail)) = (args.screen_questions, guardrail(args)) {
                let screen = BedrockGuardrailScreen::builder(guardrail)
                    .with_sdk_config(&self.config)
                    .build()?;
                builder = builder.with_question_screen(screen);
                parts.push("questions screened by the guardrail".to_string());
            }
            if let Some(model) = &args.rewrite_model {
                let rewriter = GeneratorRewriter::new(
                    BedrockGenerator::converse(model.clone())
                        .with_sdk_config(&self.config)
                        .build()?,
                )?;
                builder = builder.with_query_rewriter(rewriter);
                parts.push(format!("follow-ups rewritten by {model}"));
            }
            Ok((builder, parts))
        }
    }

    /// The guardrail of `--guardrail-id`, when given.
    fn guardrail(args: &BackendArgs) -> Option<Guardrail> {
        args.guardrail_id
            .as_ref()
            .map(|id| Guardrail::new(id.clone(), args.guardrail_version.clone()))
    }

    /// Refuses a region that is not shaped like one (`us-east-1`, `eu-central-2`, ...).
    fn check_region(region: &str) -> Result<(), Fatal> {
        let parts: Vec<&str> = region.split('-').collect();
        let shaped = parts.len() >= 3
            && parts[0].len() == 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
            && parts
                .last()
                .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
        if shaped {
            Ok(())
        } else {
            Err(Fatal::config(format!(
                "`{region}` is not an AWS region (regions look like us-east-1 or eu-west-3)"
            )))
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn regions_are_checked_by_shape() {
            for ok in [
                "us-east-1",
                "eu-central-2",
                "ap-southeast-4",
                "us-gov-west-1",
            ] {
                assert!(super::check_region(ok).is_ok(), "{ok}");
            }
            for bad in [
                "us-east",
                "useast1",
                "US-EAST-1",
                "us-east1",
                "",
                "eu-west-x",
            ] {
                let err = super::check_region(bad).expect_err(bad);
                assert!(
                    err.message.contains("is not an AWS region"),
                    "{}",
                    err.message
                );
            }
        }
    }
}

#[cfg(not(all(
    feature = "bedrock",
    feature = "knowledge-bases",
    feature = "kendra",
    feature = "dynamodb"
)))]
mod aws {
    //! Built without the AWS features: every AWS flag is refused with the way to enable them.

    use std::sync::Arc;

    use rag::{HistoryStore, PipelineBuilder};

    use super::{BackendArgs, Fatal, ModelChoice};

    const MISSING: &str = "this example was built without the AWS features; build it with \
                           `--features full` to use Bedrock, Kendra, knowledge bases or DynamoDB";

    pub(super) struct Aws;

    impl Aws {
        pub(super) async fn load(_region: Option<&str>) -> Result<Self, Fatal> {
            Err(Fatal::config(MISSING))
        }

        pub(super) fn retriever(
            &self,
            _args: &BackendArgs,
            _builder: PipelineBuilder,
        ) -> Result<(PipelineBuilder, String), Fatal> {
            Err(Fatal::config(MISSING))
        }

        pub(super) async fn history(
            &self,
            _args: &BackendArgs,
        ) -> Result<(Arc<dyn HistoryStore>, String), Fatal> {
            Err(Fatal::config(MISSING))
        }

        pub(super) fn stages(
            &self,
            _args: &BackendArgs,
            _builder: PipelineBuilder,
        ) -> Result<(PipelineBuilder, Vec<String>), Fatal> {
            Err(Fatal::config(MISSING))
        }

        pub(super) fn generator(
            &self,
            _args: &BackendArgs,
            _model: &str,
            _choice: ModelChoice,
            _builder: PipelineBuilder,
        ) -> Result<(PipelineBuilder, String), Fatal> {
            Err(Fatal::config(MISSING))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        backend: BackendArgs,
    }

    const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
    const LLAMA3: &str = "us.meta.llama3-3-70b-instruct-v1:0";

    /// The model `argv` resolves to; a refusal's message (always a configuration error).
    fn choice(argv: &[&str]) -> Result<Option<ModelChoice>, String> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.backend.check().map_err(|f| {
            assert_eq!(f.code, 2);
            f.message
        })
    }

    fn check(argv: &[&str]) -> Result<(), String> {
        choice(argv).map(|_| ())
    }

    #[test]
    fn a_guardrail_needs_a_bedrock_model_and_screening_needs_a_guardrail() {
        let refused = check(&["--guardrail-id", "gr1"]).unwrap_err();
        assert!(refused.contains("--guardrail-id applies"), "{refused}");
        let refused = check(&[
            "--guardrail-id",
            "gr1",
            "--model",
            "llama3",
            "--openai-url",
            "http://127.0.0.1:11434/v1",
        ])
        .unwrap_err();
        assert!(refused.contains("--guardrail-id applies"), "{refused}");
        // clap refuses these before the check.
        assert!(check(&["--model", HAIKU, "--screen-questions"]).is_err());
        assert!(check(&["--model", HAIKU, "--guardrail-version", "1"]).is_err());
        check(&[
            "--model",
            HAIKU,
            "--guardrail-id",
            "gr1",
            "--screen-questions",
        ])
        .unwrap();
        #[cfg(feature = "bedrock")]
        for bad in [
            ["--guardrail-id", "BAD_ID", "--guardrail-version", "1"],
            ["--guardrail-id", "gr1", "--guardrail-version", "v2"],
        ] {
            let refused = check(&[&["--model", HAIKU][..], &bad[..]].concat()).unwrap_err();
            assert!(refused.contains("guardrail."), "{refused}");
        }
        let refused = check(&["--prompt-caching"]).unwrap_err();
        assert!(refused.contains("--prompt-caching applies"), "{refused}");
    }

    /// The profile `argv` resolves to, which must be accepted.
    fn profile(argv: &[&str]) -> ModelProfile {
        choice(argv)
            .unwrap_or_else(|e| panic!("{argv:?} refused: {e}"))
            .expect("a model")
            .profile
    }

    #[test]
    fn flags_that_go_together_are_checked_before_anything_loads() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["--model", HAIKU, "--retriever", "none"]), Ok(()));
        for (argv, expected) in [
            (&["--converse"][..], "--converse needs --model"),
            (
                &["--context-window", "8000"],
                "--context-window needs --model",
            ),
            (
                &["--retriever", "kendra"],
                "--retriever kendra needs --kendra-index ID",
            ),
            (
                &["--retriever", "kb"],
                "--retriever kb needs --knowledge-base ID",
            ),
            (
                &["--history", "dynamodb"],
                "--history dynamodb needs --table NAME",
            ),
            (
                &[
                    "--retriever",
                    "kendra",
                    "--kendra-index",
                    "i",
                    "--docs",
                    "d",
                ],
                "--docs applies to --retriever local",
            ),
            (
                &["--retriever", "none"],
                "the offline generator answers from passages",
            ),
        ] {
            let message = check(argv).expect_err("refused");
            assert!(message.starts_with(expected), "{argv:?}: {message}");
        }
    }

    #[test]
    fn an_openai_url_takes_the_model_name_and_a_window_without_aws() {
        let url = "http://127.0.0.1:11434/v1";
        let choice = choice(&["--openai-url", url, "--model", "llama3.2"])
            .expect("accepted")
            .expect("a model");
        assert_eq!(
            choice.profile,
            ModelProfile::custom(ModelFamily::Chat, 8_192, 1_024),
            "a chat model with the default window"
        );
        assert!(!choice.window_given);
        let given = profile(&[
            "--openai-url",
            url,
            "--model",
            "llama3.2",
            "--context-window",
            "32768",
        ]);
        assert_eq!(given.context_window, 32_768);
        let cli =
            Cli::try_parse_from(["test", "--openai-url", url, "--model", "llama3.2"]).unwrap();
        assert!(!cli.backend.uses_aws(), "the model is not on Bedrock");
        for (argv, expected) in [
            (
                &["--openai-url", url][..],
                "--openai-url needs --model NAME",
            ),
            (
                &["--openai-url", url, "--model", "m", "--converse"],
                "--converse applies to Bedrock models",
            ),
            (
                &[
                    "--openai-url",
                    url,
                    "--model",
                    "m",
                    "--context-window",
                    "1000",
                ],
                "--context-window 1000 leaves no room for a prompt",
            ),
        ] {
            let message = check(argv).expect_err("refused");
            assert!(message.starts_with(expected), "{argv:?}: {message}");
        }
    }

    #[test]
    fn an_unknown_model_needs_its_context_window() {
        let message = check(&["--model", "acme.unknown-model-v1"]).expect_err("refused");
        assert!(
            message.starts_with("unknown Bedrock model id `acme.unknown-model-v1`"),
            "the library's message first: {message}"
        );
        assert!(message.contains("pass --context-window N"), "{message}");
        // --converse does not make the window known.
        let message =
            check(&["--model", "acme.unknown-model-v1", "--converse"]).expect_err("refused");
        assert!(message.contains("pass --context-window N"), "{message}");
    }

    #[test]
    fn an_unknown_model_with_a_window_is_a_chat_model_on_converse() {
        let choice = choice(&[
            "--model",
            "acme.unknown-model-v1",
            "--context-window",
            "32000",
            "--max-tokens",
            "2000",
        ])
        .expect("accepted")
        .expect("a model");
        assert_eq!(
            choice.profile,
            ModelProfile::custom(ModelFamily::Chat, 32_000, 2_000)
        );
        assert_eq!(choice.profile.route, Route::Converse);
        assert_eq!(choice.max_tokens, 2_000);
        assert!(choice.window_given);
    }

    #[test]
    fn a_window_overrides_only_the_window_of_a_known_model() {
        let table = ModelProfile::for_model_id(LLAMA3).expect("listed");
        let given = profile(&["--model", LLAMA3, "--context-window", "64000"]);
        assert_eq!(given.context_window, 64_000);
        let mut expected = table;
        expected.context_window = 64_000;
        assert_eq!(given, expected, "everything else is the table's");
        assert_eq!(profile(&["--model", LLAMA3]), table);
        let without = choice(&["--model", LLAMA3]).expect("ok").expect("a model");
        assert!(!without.window_given);
    }

    #[test]
    fn the_window_must_leave_room_for_the_answer() {
        // 1% of the window, at least 16, is kept back: 1,024 + 16 = 1,040 leaves no prompt.
        let refused = check(&[
            "--model",
            HAIKU,
            "--context-window",
            "1040",
            "--max-tokens",
            "1024",
        ])
        .expect_err("refused");
        assert!(
            refused.starts_with("--context-window 1040 leaves no room for a prompt"),
            "{refused}"
        );
        assert!(refused.contains("--max-tokens 1024"), "{refused}");
        for window in ["0", "500"] {
            let argv = ["--model", "acme.custom", "--context-window", window];
            assert!(check(&argv).is_err(), "{argv:?}");
        }
        assert_eq!(
            check(&[
                "--model",
                HAIKU,
                "--context-window",
                "1041",
                "--max-tokens",
                "1024"
            ]),
            Ok(())
        );
        // The answer is first clamped to the model's limit (Claude 3 Haiku: 4,096), and the
        // room is checked for that.
        let clamped = choice(&[
            "--model",
            HAIKU,
            "--context-window",
            "5000",
            "--max-tokens",
            "100000",
        ])
        .expect("accepted")
        .expect("a model");
        assert_eq!(clamped.max_tokens, 4_096);
        assert!(check(&[
            "--model",
            HAIKU,
            "--context-window",
            "4000",
            "--max-tokens",
            "100000"
        ])
        .is_err());
    }

    #[test]
    fn converse_gives_text_families_a_chat_prompt_and_keeps_claude() {
        let table = ModelProfile::for_model_id(LLAMA3).expect("listed");
        let llama = profile(&["--model", LLAMA3, "--converse"]);
        assert_eq!(llama.family, ModelFamily::Chat);
        assert_eq!(llama.route, Route::Converse);
        assert_eq!(llama.framing, ModelFamily::Chat.default_framing());
        assert_eq!(llama.tokens, table.tokens, "its tokens are still Llama's");
        assert_eq!(llama.context_window, table.context_window);

        let claude_table = ModelProfile::for_model_id(HAIKU).expect("listed");
        let claude = profile(&["--model", HAIKU, "--converse"]);
        assert_eq!(claude.family, ModelFamily::Claude);
        assert_eq!(claude.route, Route::Converse);
        assert_eq!(claude.framing, claude_table.framing);
        // Without --converse the table's route stands.
        assert_eq!(profile(&["--model", HAIKU]).route, Route::Native);
    }

    #[test]
    fn explain_adds_the_causes_and_a_hint() {
        let cause = std::io::Error::other("dns error: failed to lookup address");
        let error = rag::Error::generation("dispatch failure", true).with_source(cause);
        let text = explain(&error);
        assert!(
            text.starts_with(
                "generation failed: dispatch failure: dns error: failed to lookup address\nhint: the AWS service could not be reached"
            ),
            "{text}"
        );
        let denied = rag::Error::retrieval("AccessDeniedException: not allowed", false);
        assert!(explain(&denied).contains("hint: check the IAM permissions"));
        let local = rag::Error::generation(
            "chat completions: could not connect to http://127.0.0.1:9/v1/chat/completions",
            true,
        );
        let text = explain(&local);
        assert!(
            text.contains("hint: the model server could not be reached"),
            "{text}"
        );
        assert!(!text.contains("AWS"), "{text}");
        let plain = rag::Error::invalid_input("question", "must not be empty");
        assert_eq!(explain(&plain), "invalid question: must not be empty");
    }
}
