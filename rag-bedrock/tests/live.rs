//! Against real AWS: run with `cargo test -p rag-bedrock --all-features -- --ignored` and
//! credentials for an account with model access. `RAG_BEDROCK_MODEL_ID` overrides the model;
//! `RAG_BEDROCK_KB_ID` names a knowledge base for the retriever test.

use futures::StreamExt;
use rag_bedrock::BedrockGenerator;
use rag_core::{Chunk, GenerationParams, Generator, Message, Prompt};

fn model_id() -> String {
    std::env::var("RAG_BEDROCK_MODEL_ID")
        .unwrap_or_else(|_| "anthropic.claude-3-haiku-20240307-v1:0".to_owned())
}

async fn answer(generator: &BedrockGenerator) -> (String, bool) {
    let prompt = Prompt::Chat {
        system: Some("Answer in one short sentence.".into()),
        messages: vec![Message::user("What is AWS Lambda?")],
    };
    let params = GenerationParams::default().with_max_tokens(100);
    let mut stream = generator.generate(&prompt, &params).await.unwrap();
    let (mut text, mut stopped) = (String::new(), false);
    while let Some(chunk) = stream.next().await {
        match chunk.unwrap() {
            Chunk::Text(t) => text.push_str(&t),
            Chunk::Stop(_) => stopped = true,
            _ => {}
        }
    }
    (text, stopped)
}

#[tokio::test]
#[ignore = "requires AWS credentials"]
async fn native_stream_from_real_bedrock() {
    let generator = BedrockGenerator::from_env(model_id()).await.unwrap();
    let (text, stopped) = answer(&generator).await;
    assert!(!text.trim().is_empty());
    assert!(stopped);
}

#[tokio::test]
#[ignore = "requires AWS credentials"]
async fn converse_stream_from_real_bedrock() {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let generator = BedrockGenerator::converse(model_id())
        .with_sdk_config(&config)
        .build()
        .unwrap();
    let (text, stopped) = answer(&generator).await;
    assert!(!text.trim().is_empty());
    assert!(stopped);
}

#[cfg(feature = "knowledge-bases")]
#[tokio::test]
#[ignore = "requires AWS credentials"]
async fn knowledge_base_from_real_bedrock() {
    use rag_core::{RetrievalRequest, Retriever};
    let id = std::env::var("RAG_BEDROCK_KB_ID").expect("set RAG_BEDROCK_KB_ID");
    let retriever = rag_bedrock::KnowledgeBaseRetriever::from_env(id)
        .await
        .unwrap();
    let passages = retriever
        .retrieve(&RetrievalRequest::new("What is AWS Lambda?", 3))
        .await
        .unwrap();
    assert!(passages.len() <= 3);
    assert!(passages.iter().all(|p| !p.text.is_empty()));
}
