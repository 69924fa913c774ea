//! One scripted conversation per model family: the prompt, the request body Bedrock must
//! receive, and the model JSON chunks it streams back.

#![allow(dead_code, unreachable_pub)]

use rag_core::{GenerationParams, Message, ModelFamily, Prompt, Usage};
use serde_json::{json, Value};

/// The answer every family streams, one piece per chunk.
pub const PIECES: [&str; 24] = [
    "AWS",
    " Lambda",
    " runs",
    " your",
    " code",
    " in",
    " response",
    " to",
    " events",
    " and",
    " manages",
    " the",
    " compute",
    " for",
    " you",
    ",",
    " scaling",
    " from",
    " zero",
    " to",
    " thousands",
    " of",
    " requests",
    ".",
];

pub const INPUT_TOKENS: u64 = 31;

pub fn answer() -> String {
    PIECES.concat()
}

pub fn output_tokens() -> u64 {
    PIECES.len() as u64
}

/// The settings every case sends.
pub fn params() -> GenerationParams {
    GenerationParams::default()
        .with_max_tokens(512)
        .with_temperature(0.2)
        .with_top_p(0.9)
        .with_top_k(50)
}

pub struct Case {
    pub family: ModelFamily,
    pub model_id: &'static str,
    pub prompt: Prompt,
    /// The native request body for [`params`], as Bedrock must receive it.
    pub body: Value,
    /// The model JSON chunks of a normal answer.
    pub chunks: Vec<String>,
}

const SYSTEM: &str = "Answer from the passages.";
const QUESTION: &str = "What does Lambda do?";

fn metrics() -> Value {
    json!({
        "inputTokenCount": INPUT_TOKENS,
        "outputTokenCount": output_tokens(),
        "invocationLatency": 812,
        "firstByteLatency": 95
    })
}

fn with_metrics(mut chunk: Value) -> String {
    chunk["amazon-bedrock-invocationMetrics"] = metrics();
    chunk.to_string()
}

pub fn chat_prompt() -> Prompt {
    Prompt::Chat {
        system: Some(SYSTEM.into()),
        messages: vec![Message::user(QUESTION)],
    }
}

pub fn cases() -> Vec<Case> {
    vec![
        claude(),
        claude_text(),
        llama2(),
        llama3(),
        titan(),
        mistral(),
    ]
}

pub fn case(family: ModelFamily) -> Case {
    cases().into_iter().find(|c| c.family == family).unwrap()
}

pub fn claude() -> Case {
    let mut chunks = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-3-sonnet", "content": [], "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}})
        .to_string(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string(),
    ];
    chunks.extend(PIECES.iter().map(|p| {
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}).to_string()
    }));
    chunks.push(json!({"type": "content_block_stop", "index": 0}).to_string());
    chunks.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": output_tokens()}})
        .to_string(),
    );
    chunks.push(with_metrics(json!({"type": "message_stop"})));
    Case {
        family: ModelFamily::Claude,
        model_id: "anthropic.claude-3-sonnet-20240229-v1:0",
        prompt: chat_prompt(),
        body: json!({
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 512,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 50
        }),
        chunks,
    }
}

pub fn claude_text() -> Case {
    let prompt = format!("\n\nHuman: {QUESTION}\n\nAssistant:");
    let mut chunks: Vec<String> = PIECES
        .iter()
        .map(|p| json!({"completion": p, "stop_reason": null, "stop": null}).to_string())
        .collect();
    chunks.push(with_metrics(
        json!({"completion": "", "stop_reason": "stop_sequence", "stop": "\n\nHuman:"}),
    ));
    Case {
        family: ModelFamily::ClaudeText,
        model_id: "anthropic.claude-v2:1",
        body: json!({
            "prompt": prompt,
            "max_tokens_to_sample": 512,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 50
        }),
        prompt: Prompt::Text(prompt),
        chunks,
    }
}

fn llama_chunks() -> Vec<String> {
    let mut chunks: Vec<String> = PIECES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "generation": p,
                "prompt_token_count": if i == 0 { Some(INPUT_TOKENS) } else { None },
                "generation_token_count": i + 1,
                "stop_reason": null
            })
            .to_string()
        })
        .collect();
    chunks.push(with_metrics(json!({
        "generation": "", "prompt_token_count": null,
        "generation_token_count": output_tokens(), "stop_reason": "stop"
    })));
    chunks
}

pub fn llama2() -> Case {
    let prompt = format!("<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{QUESTION} [/INST]");
    Case {
        family: ModelFamily::Llama2,
        model_id: "meta.llama2-13b-chat-v1",
        body: json!({"prompt": prompt, "max_gen_len": 512, "temperature": 0.2, "top_p": 0.9}),
        prompt: Prompt::Text(prompt),
        chunks: llama_chunks(),
    }
}

pub fn llama3() -> Case {
    let prompt = format!(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n{QUESTION}<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    Case {
        family: ModelFamily::Llama3,
        model_id: "us.meta.llama3-1-70b-instruct-v1:0",
        body: json!({"prompt": prompt, "max_gen_len": 512, "temperature": 0.2, "top_p": 0.9}),
        prompt: Prompt::Text(prompt),
        chunks: llama_chunks(),
    }
}

pub fn titan() -> Case {
    let prompt = format!("{SYSTEM}\n\nUser: {QUESTION}\nBot:");
    let mut chunks: Vec<String> = PIECES
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"outputText": p, "index": 0, "totalOutputTextTokenCount": i + 1,
                "completionReason": null, "inputTextTokenCount": INPUT_TOKENS})
            .to_string()
        })
        .collect();
    chunks.push(with_metrics(json!({
        "outputText": "", "index": 0, "totalOutputTextTokenCount": output_tokens(),
        "completionReason": "FINISH", "inputTextTokenCount": INPUT_TOKENS
    })));
    Case {
        family: ModelFamily::TitanText,
        model_id: "amazon.titan-text-express-v1",
        body: json!({
            "inputText": prompt,
            "textGenerationConfig": {"maxTokenCount": 512, "temperature": 0.2, "topP": 0.9}
        }),
        prompt: Prompt::Text(prompt),
        chunks,
    }
}

pub fn mistral() -> Case {
    let prompt = format!("<s>[INST] {SYSTEM}\n\n{QUESTION} [/INST]");
    let mut chunks: Vec<String> = PIECES
        .iter()
        .map(|p| json!({"outputs": [{"text": p, "stop_reason": null}]}).to_string())
        .collect();
    chunks.push(with_metrics(
        json!({"outputs": [{"text": "", "stop_reason": "stop"}]}),
    ));
    Case {
        family: ModelFamily::Mistral,
        model_id: "mistral.mixtral-8x7b-instruct-v0:1",
        body: json!({
            "prompt": prompt,
            "max_tokens": 512,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 50
        }),
        prompt: Prompt::Text(prompt),
        chunks,
    }
}

/// Usage as the pipeline merges it: the latest nonzero value per field.
pub fn merged_usage(chunks: &[rag_core::Chunk]) -> Option<Usage> {
    let mut usage: Option<Usage> = None;
    for chunk in chunks {
        if let rag_core::Chunk::Usage(u) = chunk {
            let merged = usage.get_or_insert_with(Usage::default);
            if u.input_tokens > 0 {
                merged.input_tokens = u.input_tokens;
            }
            if u.output_tokens > 0 {
                merged.output_tokens = u.output_tokens;
            }
            if u.cache_read_input_tokens > 0 {
                merged.cache_read_input_tokens = u.cache_read_input_tokens;
            }
            if u.cache_write_input_tokens > 0 {
                merged.cache_write_input_tokens = u.cache_write_input_tokens;
            }
        }
    }
    usage
}
