//! Apps of chained prompt steps, from the command line.
//!
//! ```text
//! cargo run --example app --features full -- run examples/apps/two-models.json --input topic="edge caching" --bedrock
//! cargo run --example app --features full -- run examples/apps/rag-citations.json --input question="How is history stored?"
//! cargo run --example app --features full -- validate examples/apps/image.json
//! cargo run --example app --features full -- fork examples/apps/image.json
//! ```
//!
//! `run` streams each node's output as it arrives, each line prefixed by the node id, then
//! prints every output and each node's citations. Without `--bedrock` (or another AWS flag)
//! nothing calls AWS: `rag` nodes answer from the local index with the extractive generator,
//! and an app with model nodes is refused with a message saying so. `validate` prints every
//! problem and exits 2 when there is one; `fork` prints the app forked, with its provenance.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use rag::app::{
    AppDoc, BedrockModels, Inputs, Models, Plan, RagAnswerer, RunEvent, Runner, RunnerBuilder,
};
use rag::memory::{ExtractiveGenerator, ExtractiveTemplate, InMemoryHistory, TantivyRetriever};
use rag::{Error, Generator, ImageGenerator, Result};

#[path = "common/docs.rs"]
mod docs;

#[derive(Debug, Parser)]
#[command(about = "Run, check and fork apps of chained prompt steps")]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs an app and streams each node's output.
    Run {
        /// The app file.
        file: PathBuf,
        /// A value for an input node: `NAME=VALUE` (repeatable).
        #[arg(long = "input", value_name = "NAME=VALUE", value_parser = parse_input)]
        inputs: Vec<(String, String)>,
        #[command(flatten)]
        aws: AwsArgs,
        /// Model calls in flight at once.
        #[arg(long, default_value_t = Runner::DEFAULT_CONCURRENCY)]
        concurrency: usize,
    },
    /// Prints every problem of an app; exits 2 when there is one.
    Validate {
        /// The app file.
        file: PathBuf,
    },
    /// Prints the app forked: a new id, and where it comes from.
    Fork {
        /// The app file.
        file: PathBuf,
    },
}

/// Where passages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RetrieverKind {
    /// A local tantivy index of `--docs` (default: this project's documentation).
    Local,
    /// An Amazon Kendra index (`--kendra-index`).
    Kendra,
    /// An Amazon Bedrock knowledge base (`--knowledge-base`).
    Kb,
}

/// The chat example's AWS flags, for what an app's nodes need.
#[derive(Debug, Clone, clap::Args)]
struct AwsArgs {
    /// Call the nodes' models on Amazon Bedrock (credentials and region from the AWS
    /// environment, or --region).
    #[arg(long)]
    bedrock: bool,
    /// What the apps' retriever binding `docs` is bound to.
    #[arg(long, value_enum, default_value_t = RetrieverKind::Local)]
    retriever: RetrieverKind,
    /// Folders of Markdown and text files for the local index (repeatable).
    #[arg(long, value_name = "DIR")]
    docs: Vec<PathBuf>,
    /// The Kendra index id, for `--retriever kendra`.
    #[arg(long, value_name = "ID")]
    kendra_index: Option<String>,
    /// The knowledge base id, for `--retriever kb`.
    #[arg(long, value_name = "ID")]
    knowledge_base: Option<String>,
    /// The DynamoDB table where `rag` nodes' turns are kept (default: in memory).
    #[arg(long, value_name = "NAME")]
    table: Option<String>,
    /// The AWS region.
    #[arg(long)]
    region: Option<String>,
}

impl AwsArgs {
    fn uses_aws(&self) -> bool {
        self.bedrock || self.retriever != RetrieverKind::Local || self.table.is_some()
    }
}

fn parse_input(text: &str) -> std::result::Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// Offline: `rag` nodes answer with the extractive generator; every other model node is
/// refused, with what to do about it.
#[derive(Debug)]
struct Offline;

const OFFLINE: &str = "this node calls a model, and nothing calls AWS without --bedrock: run with \
                       --bedrock (AWS credentials and a region in the environment, or --region); \
                       offline, only rag nodes run, answered from the local index";

impl Models for Offline {
    fn generator(&self, _model_id: &str) -> Result<Arc<dyn Generator>> {
        Err(Error::config(OFFLINE))
    }

    fn image_generator(&self, _model_id: &str) -> Result<Arc<dyn ImageGenerator>> {
        Err(Error::config(OFFLINE))
    }

    fn rag_answerer(&self, _model_id: &str) -> Result<RagAnswerer> {
        Ok(RagAnswerer {
            generator: Arc::new(ExtractiveGenerator::new()),
            template: Some(Arc::new(ExtractiveTemplate::new())),
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut out = std::io::stdout();
    match run(args, &mut out).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read(file: &PathBuf) -> std::result::Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

pub(crate) async fn run(args: Args, out: &mut impl Write) -> std::result::Result<ExitCode, String> {
    let w = |e: std::io::Error| e.to_string();
    match args.command {
        Command::Validate { file } => {
            let problems = rag::app::validate_json(&read(&file)?);
            if problems.is_empty() {
                writeln!(out, "{}: no problems", file.display()).map_err(w)?;
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                writeln!(out, "{p}").map_err(w)?;
            }
            writeln!(out, "{}: {} problem(s)", file.display(), problems.len()).map_err(w)?;
            Ok(ExitCode::from(2))
        }
        Command::Fork { file } => {
            let doc = AppDoc::from_json(&read(&file)?).map_err(|e| e.to_string())?;
            writeln!(out, "{}", doc.fork().to_json_pretty()).map_err(w)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            inputs,
            aws,
            concurrency,
        } => {
            let plan = match Plan::from_json(&read(&file)?) {
                Ok(plan) => plan,
                Err(problems) => {
                    for p in &problems.0 {
                        writeln!(out, "{p}").map_err(w)?;
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            for warning in plan.warnings() {
                eprintln!("warning: {warning}");
            }
            let inputs: Inputs = inputs.into_iter().collect();
            let runner = runner(&aws)
                .await?
                .with_concurrency(concurrency)
                .build()
                .map_err(|e| e.to_string())?;
            run_app(&runner, &plan, &inputs, out).await
        }
    }
}

async fn runner(aws: &AwsArgs) -> std::result::Result<RunnerBuilder, String> {
    let local = || -> std::result::Result<TantivyRetriever, String> {
        let index = TantivyRetriever::in_memory().map_err(|e| e.to_string())?;
        let (files, passages) = docs::index_docs(&index, &aws.docs)?;
        eprintln!("Indexed {passages} passages from {files} files as the binding `docs`.");
        Ok(index)
    };
    if !aws.uses_aws() {
        return Ok(Runner::builder(Offline)
            .with_retriever("docs", local()?)
            .with_history(InMemoryHistory::new()));
    }
    let mut loader = rag::bedrock::sdk::aws_config::defaults(
        rag::bedrock::sdk::aws_config::BehaviorVersion::latest(),
    );
    if let Some(region) = &aws.region {
        loader = loader.region(rag::bedrock::sdk::aws_config::Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(
            "no AWS region: pass --region, set AWS_REGION, or set a region in your AWS profile"
                .into(),
        );
    }
    let models: Box<dyn Models> = if aws.bedrock {
        Box::new(BedrockModels::from_sdk_config(&config))
    } else {
        Box::new(Offline)
    };
    let mut builder = Runner::builder(models);
    builder = match aws.retriever {
        RetrieverKind::Local => builder.with_retriever("docs", local()?),
        RetrieverKind::Kendra => {
            let id = aws
                .kendra_index
                .clone()
                .ok_or("--retriever kendra needs --kendra-index ID")?;
            builder.with_retriever(
                "docs",
                rag::kendra::KendraRetriever::builder()
                    .with_sdk_config(&config)
                    .with_index_id(id)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        }
        RetrieverKind::Kb => {
            let id = aws
                .knowledge_base
                .clone()
                .ok_or("--retriever kb needs --knowledge-base ID")?;
            builder.with_retriever(
                "docs",
                rag::bedrock::KnowledgeBaseRetriever::builder(id)
                    .with_sdk_config(&config)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    Ok(match &aws.table {
        Some(table) => builder.with_history(
            rag::dynamodb::DynamoDbHistory::builder(table.clone())
                .with_sdk_config(&config)
                .build()
                .map_err(|e| e.to_string())?,
        ),
        None => builder.with_history(InMemoryHistory::new()),
    })
}

/// Streams the run: each node's text as it arrives, on lines prefixed `[node]`; then the
/// outputs and citations. Exit code 1 when a node failed.
pub(crate) async fn run_app(
    runner: &Runner,
    plan: &Plan,
    inputs: &Inputs,
    out: &mut impl Write,
) -> std::result::Result<ExitCode, String> {
    let w = |e: std::io::Error| e.to_string();
    let mut stream = runner.run(plan, inputs).map_err(|e| e.to_string())?;
    // The node whose text is being printed, to start a new prefixed line when it changes.
    let mut current: Option<String> = None;
    let mut line_open = false;
    let mut report = None;
    while let Some(event) = stream.next().await {
        if let RunEvent::Delta { node, text } = &event {
            for (i, piece) in text.split('\n').enumerate() {
                if i > 0 || current.as_deref() != Some(node.as_str()) {
                    if line_open {
                        writeln!(out).map_err(w)?;
                    }
                    write!(out, "[{node}] ").map_err(w)?;
                    current = Some(node.clone());
                }
                write!(out, "{piece}").map_err(w)?;
                line_open = true;
            }
            out.flush().map_err(w)?;
            continue;
        }
        if line_open {
            writeln!(out).map_err(w)?;
            line_open = false;
            current = None;
        }
        match event {
            RunEvent::Done {
                node, cached: true, ..
            } => {
                eprintln!("[{node}] (from the cache)");
            }
            RunEvent::Failed { node, error } => {
                writeln!(out, "[{node}] failed: {error}").map_err(w)?;
            }
            RunEvent::Skipped { node, because } => {
                writeln!(
                    out,
                    "[{node}] skipped: it needs `{because}`, which did not finish"
                )
                .map_err(w)?;
            }
            RunEvent::Warning { node, message } => eprintln!("[{node}] warning: {message}"),
            RunEvent::Finished(r) => report = Some(r),
            _ => {}
        }
    }
    let report = report.ok_or("the run ended without its report")?;
    writeln!(out, "\n== outputs").map_err(w)?;
    let outputs: BTreeMap<_, _> = report.outputs.iter().collect();
    for (node, output) in outputs {
        if matches!(
            plan.doc().nodes.get(node.as_str()),
            Some(rag::app::Node::Input(_) | rag::app::Node::Text(_))
        ) {
            continue;
        }
        match &output.image {
            Some(image) => {
                let path = std::env::temp_dir().join(format!(
                    "{}-{node}.{}",
                    plan.doc().id,
                    image.format()
                ));
                std::fs::write(&path, image.bytes()).map_err(|e| e.to_string())?;
                writeln!(
                    out,
                    "{node}: image ({} bytes) written to {}",
                    image.bytes().len(),
                    path.display()
                )
                .map_err(w)?;
            }
            None => writeln!(out, "{node}: {}", output.text).map_err(w)?,
        }
        if !output.citations.is_empty() {
            writeln!(out, "{node} citations:").map_err(w)?;
            for line in output.citations_text().lines() {
                writeln!(out, "  {line}").map_err(w)?;
            }
        }
    }
    writeln!(
        out,
        "== {} node(s) done ({} from the cache), {} failed, {} skipped, in {:.1?}",
        report.outputs.len(),
        report.cached.len(),
        report.failed.len(),
        report.skipped.len(),
        report.elapsed
    )
    .map_err(w)?;
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
