//! Against a real Kendra index: `KENDRA_INDEX_ID=... cargo test -p rag-kendra --test live -- --ignored`.

use rag_core::{RetrievalRequest, Retriever};
use rag_kendra::KendraRetriever;

#[tokio::test]
#[ignore = "requires AWS credentials"]
async fn retrieves_passages_from_a_real_index() {
    let index_id = std::env::var("KENDRA_INDEX_ID").expect("set KENDRA_INDEX_ID to an index id");
    let retriever = KendraRetriever::from_env(index_id)
        .await
        .expect("retriever");
    let question =
        std::env::var("KENDRA_QUESTION").unwrap_or_else(|_| "What is this about?".into());
    let passages = retriever
        .retrieve(&RetrievalRequest::new(question, 5))
        .await
        .expect("Kendra answered");
    assert!(passages.len() <= 5);
    for p in &passages {
        assert!(!p.text.trim().is_empty());
        assert!(!p.id.is_empty());
    }
}
