//! The Knowledge Bases retriever through the real Bedrock Agent Runtime client against a
//! loopback restJson1 server.

#![cfg(feature = "knowledge-bases")]

mod support;

use rag_bedrock::KnowledgeBaseRetriever;
use rag_core::{Error, Filter, RetrievalRequest, Retriever};
use serde_json::json;
use support::{client, Part, Reply, TestServer};

fn results() -> serde_json::Value {
    json!({"retrievalResults": [
        {
            "content": {"type": "TEXT", "text": "Lambda runs code without servers."},
            "location": {"type": "S3", "s3Location": {"uri": "s3://docs/lambda/welcome.md"}},
            "score": 0.91,
            "metadata": {
                "x-amz-bedrock-kb-source-uri": "s3://docs/lambda/welcome.md",
                "x-amz-bedrock-kb-chunk-id": "1%3A0%3Aabc",
                "year": 2024
            }
        },
        {
            "content": {"text": "Functions scale automatically."},
            "location": {"type": "WEB", "webLocation": {"url": "https://example.com/lambda/scaling"}},
            "score": 0.72,
            "futureField": {"ignored": true}
        },
        {
            "content": {"text": "A page from Confluence."},
            "location": {"type": "CONFLUENCE", "confluenceLocation": {"url": "https://wiki.example.com/x"}}
        }
    ]})
}

fn retriever(server: &TestServer) -> KnowledgeBaseRetriever {
    KnowledgeBaseRetriever::builder("KB12345678")
        .with_client(client::agent_runtime(&server.url()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn results_become_passages_with_uri_score_and_metadata() {
    let server = TestServer::start([Reply::ok_json(results())]).await;
    let passages = retriever(&server)
        .retrieve(&RetrievalRequest::new("What is Lambda?", 5))
        .await
        .unwrap();
    assert_eq!(passages.len(), 3);
    assert_eq!(passages[0].id, "1%3A0%3Aabc");
    assert_eq!(passages[0].text, "Lambda runs code without servers.");
    assert_eq!(
        passages[0].uri.as_deref(),
        Some("s3://docs/lambda/welcome.md")
    );
    assert!((passages[0].score.unwrap() - 0.91).abs() < 1e-6);
    assert_eq!(passages[0].attributes["year"], json!(2024));
    assert_eq!(
        passages[1].uri.as_deref(),
        Some("https://example.com/lambda/scaling")
    );
    assert_eq!(passages[1].id, "kb-result-2");
    assert_eq!(
        passages[2].uri.as_deref(),
        Some("https://wiki.example.com/x")
    );
    assert_eq!(passages[2].score, None);

    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/knowledgebases/KB12345678/retrieve");
    assert_eq!(
        request.json(),
        json!({
            "retrievalQuery": {"text": "What is Lambda?", "type": "TEXT"},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 5}}
        })
    );
    let auth = request.headers["authorization"].to_str().unwrap();
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
}

#[tokio::test]
async fn top_k_is_clamped_to_the_service_limit_and_results_to_top_k() {
    let server = TestServer::start([Reply::ok_json(results()), Reply::ok_json(results())]).await;
    let r = retriever(&server);
    r.retrieve(&RetrievalRequest::new("q", 500)).await.unwrap();
    let two = r.retrieve(&RetrievalRequest::new("q", 2)).await.unwrap();
    assert_eq!(two.len(), 2);
    let requests = server.requests();
    let n = |i: usize| {
        requests[i].json()["retrievalConfiguration"]["vectorSearchConfiguration"]["numberOfResults"]
            .clone()
    };
    assert_eq!(n(0), json!(100));
    assert_eq!(n(1), json!(2));
}

#[tokio::test]
async fn filters_reach_the_service_in_its_shape() {
    let server = TestServer::start([Reply::ok_json(results()), Reply::ok_json(results())]).await;
    let r = retriever(&server);
    let mut req = RetrievalRequest::new("q", 3);
    req.filter = Some(Filter::And(vec![
        Filter::Equals {
            key: "team".into(),
            value: json!("compute"),
        },
        Filter::In {
            key: "year".into(),
            values: vec![json!(2023), json!(2024)],
        },
    ]));
    r.retrieve(&req).await.unwrap();
    let raw = json!({"orAll": [
        {"startsWith": {"key": "path", "value": "docs/"}},
        {"greaterThanOrEquals": {"key": "year", "value": 2020}}
    ]});
    req.filter = Some(Filter::Raw(raw.clone()));
    r.retrieve(&req).await.unwrap();
    let requests = server.requests();
    let filter = |i: usize| {
        requests[i].json()["retrievalConfiguration"]["vectorSearchConfiguration"]["filter"].clone()
    };
    assert_eq!(
        filter(0),
        json!({"andAll": [
            {"equals": {"key": "team", "value": "compute"}},
            {"in": {"key": "year", "value": [2023, 2024]}}
        ]})
    );
    assert_eq!(filter(1), raw);
}

#[tokio::test]
async fn bad_input_and_unusable_filters_fail_before_any_call() {
    let server = TestServer::start([]).await;
    let r = retriever(&server);
    let err = r
        .retrieve(&RetrievalRequest::new("  ", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { field: "query", .. }));
    let mut req = RetrievalRequest::new("q", 3);
    req.filter = Some(Filter::Raw(json!({"regex": {"key": "a", "value": ".*"}})));
    let err = r.retrieve(&req).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "filter",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.hits(), 0);
    assert!(KnowledgeBaseRetriever::builder("not an id!")
        .with_client(client::agent_runtime("http://127.0.0.1:9"))
        .build()
        .is_err());
    assert!(KnowledgeBaseRetriever::builder("KB12345678")
        .build()
        .is_err());
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let server = TestServer::start([
        Reply::error(429, "ThrottlingException", "Rate exceeded"),
        Reply::ok_json(results()),
    ])
    .await;
    let passages = retriever(&server)
        .retrieve(&RetrievalRequest::new("q", 3))
        .await
        .unwrap();
    assert_eq!(passages.len(), 3);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn failures_are_retrieval_errors_with_the_service_message() {
    let cases = [
        (400, "ValidationException", false, 1),
        (403, "AccessDeniedException", false, 1),
        (404, "ResourceNotFoundException", false, 1),
        (429, "ThrottlingException", true, 3),
        (500, "InternalServerException", true, 3),
        (502, "BadGatewayException", true, 3),
    ];
    for (status, error_type, retryable, attempts) in cases {
        let message = format!("{error_type} from the knowledge base");
        let server = TestServer::start(vec![Reply::error(status, error_type, &message); 3]).await;
        let err = retriever(&server)
            .retrieve(&RetrievalRequest::new("q", 3))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Retrieval { .. }), "{err}");
        assert_eq!(err.is_retryable(), retryable, "{error_type}");
        assert!(err.to_string().contains(&message), "{err}");
        assert_eq!(server.hits(), attempts, "{error_type}");
    }
}

#[tokio::test]
async fn a_malformed_response_is_a_retrieval_error() {
    let server = TestServer::start(vec![
        Reply::Json {
            status: 200,
            error_type: None,
            body: "{\"retrievalResults\": [".into()
        };
        3
    ])
    .await;
    let err = retriever(&server)
        .retrieve(&RetrievalRequest::new("q", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Retrieval { .. }), "{err}");
}

#[tokio::test]
async fn a_cut_off_response_is_a_retryable_retrieval_error() {
    let body = results().to_string();
    let half = bytes::Bytes::from(body[..body.len() / 2].to_owned());
    let server = TestServer::start(vec![Reply::JsonParts(vec![Part::Bytes(half)]); 3]).await;
    let err = retriever(&server)
        .retrieve(&RetrievalRequest::new("q", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Retrieval { .. }), "{err}");
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn a_response_that_stalls_past_the_timeout_is_a_timeout() {
    let body = results().to_string();
    let start = bytes::Bytes::from(body[..20].to_owned());
    let server = TestServer::start([Reply::JsonParts(vec![Part::Bytes(start), Part::Stall])]).await;
    let retriever = KnowledgeBaseRetriever::builder("KB12345678")
        .with_client(client::agent_runtime(&server.url()))
        .with_timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = retriever
        .retrieve(&RetrievalRequest::new("q", 3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { stage: rag_core::Stage::Retrieval, after } if after.as_millis() == 300),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}
