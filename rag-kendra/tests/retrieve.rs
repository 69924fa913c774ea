//! The retriever through the real SDK client against a loopback Kendra.

mod support;

use aws_sdk_kendra::config::retry::RetryConfig;
use rag_core::{Error, Filter, RetrievalRequest, Retriever, UserContext, Warning};
use rag_kendra::{
    AttributeFilter, Confidence, KendraApi, KendraRetriever, CONFIDENCE_ATTRIBUTE,
    DOCUMENT_ID_ATTRIBUTE, MAX_QUERY_CHARS, QUESTION_ATTRIBUTE, RESULT_TYPE_ATTRIBUTE,
};
use serde_json::{json, Value};
use support::{page_number, retrieve_item, retrieve_response, FakeKendra, Reply, INDEX};

fn two_passages() -> Value {
    retrieve_response(vec![
        retrieve_item("p1", "Lambda scales per request.", "VERY_HIGH"),
        retrieve_item("p2", "Concurrency limits apply.", "MEDIUM"),
    ])
}

fn alice() -> UserContext {
    UserContext {
        token: None,
        user_id: Some("alice".into()),
        groups: vec!["eng".into(), "oncall".into()],
    }
}

#[tokio::test]
async fn retrieve_request_carries_index_query_page_filter_and_user() {
    let fake = FakeKendra::always(Reply::Ok(two_passages())).await;
    let retriever = fake
        .retriever()
        .with_language_code("en")
        .with_filter(AttributeFilter::equals("_category", "guide"))
        .build()
        .unwrap();
    let mut req = RetrievalRequest::new("How does Lambda\nscale?", 5);
    req.user = Some(alice());
    req.filter = Some(Filter::Or(vec![
        Filter::Equals {
            key: "team".into(),
            value: json!("infra"),
        },
        Filter::In {
            key: "team".into(),
            values: vec![json!("platform"), json!("security")],
        },
    ]));
    let passages = retriever.retrieve(&req).await.unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.target, "AWSKendraFrontendService.Retrieve");
    assert_eq!(sent.content_type, "application/x-amz-json-1.1");
    assert!(sent.signed, "the SDK signs with the test credentials");
    assert_eq!(sent.body["IndexId"], INDEX);
    // The newline, outside Kendra's QueryText pattern, is sent as a space.
    assert_eq!(sent.body["QueryText"], "How does Lambda scale?");
    assert_eq!(sent.body["PageSize"], 5);
    assert_eq!(sent.body["PageNumber"], 1);
    assert_eq!(
        sent.body["AttributeFilter"],
        json!({"AndAllFilters": [
            {"EqualsTo": {"Key": "_category", "Value": {"StringValue": "guide"}}},
            {"EqualsTo": {"Key": "_language_code", "Value": {"StringValue": "en"}}},
            // `In` on a string attribute: an `OrAllFilters` of `EqualsTo` (Kendra's
            // `ContainsAny` tests string lists only, and would match nothing here), merged into
            // the request's `Or`, so the filter stays within Kendra's two levels.
            {"OrAllFilters": [
                {"EqualsTo": {"Key": "team", "Value": {"StringValue": "infra"}}},
                {"EqualsTo": {"Key": "team", "Value": {"StringValue": "platform"}}},
                {"EqualsTo": {"Key": "team", "Value": {"StringValue": "security"}}}
            ]}
        ]})
    );
    assert_eq!(
        sent.body["UserContext"],
        json!({"UserId": "alice", "Groups": ["eng", "oncall"]})
    );

    assert_eq!(passages.len(), 2);
    let p = &passages[0];
    assert_eq!(p.id, "p1");
    assert_eq!(p.text, "Lambda scales per request.");
    assert_eq!(p.title.as_deref(), Some("Title p1"));
    assert_eq!(p.uri.as_deref(), Some("https://docs.example.com/p1"));
    assert_eq!(p.score, Some(1.0));
    assert_eq!(p.attributes["_category"], "guide");
    assert_eq!(p.attributes["_created_at"], "2024-01-02T00:00:00Z");
    assert_eq!(p.attributes["page"], 3);
    assert_eq!(p.attributes[DOCUMENT_ID_ATTRIBUTE], "s3://docs/p1.html");
    assert_eq!(p.attributes[CONFIDENCE_ATTRIBUTE], "VERY_HIGH");
    assert_eq!(passages[1].score, Some(0.5));
}

#[tokio::test]
async fn a_token_user_context_and_a_raw_filter_pass_through() {
    let fake = FakeKendra::always(Reply::Ok(two_passages())).await;
    let retriever = fake.retriever().build().unwrap();
    let raw =
        json!({"GreaterThanOrEquals": {"Key": "_created_at", "Value": {"DateValue": 1700000000}}});
    let mut req = RetrievalRequest::new("q", 2);
    req.user = Some(UserContext {
        token: Some("eyJhbGciOi.test.token".into()),
        ..UserContext::default()
    });
    req.filter = Some(Filter::Raw(raw.clone()));
    retriever.retrieve(&req).await.unwrap();
    let body = &fake.requests()[0].body;
    assert_eq!(
        body["UserContext"],
        json!({"Token": "eyJhbGciOi.test.token"})
    );
    assert_eq!(body["AttributeFilter"], raw);
    // No filter and no user: neither member is sent.
    retriever
        .retrieve(&RetrievalRequest::new("q", 2))
        .await
        .unwrap();
    let body = &fake.requests()[1].body;
    assert!(body.get("AttributeFilter").is_none() && body.get("UserContext").is_none());
}

#[tokio::test]
async fn top_k_above_100_is_served_by_further_pages() {
    // Pages 1 and 2 are full, page 3 has 30 results: 230 in all.
    let fake = FakeKendra::start(|req, _| {
        let page = page_number(req);
        let count = match page {
            1 | 2 => 100,
            3 => 30,
            _ => 0,
        };
        let items = (0..count)
            .map(|i| retrieve_item(&format!("r{page}-{i}"), &format!("text {page} {i}"), "HIGH"))
            .collect();
        Reply::Ok(retrieve_response(items))
    })
    .await;
    let retriever = fake.retriever().build().unwrap();

    let passages = retriever
        .retrieve(&RetrievalRequest::new("q", 250))
        .await
        .unwrap();
    assert_eq!(passages.len(), 230);
    assert_eq!(passages[0].id, "r1-0");
    assert_eq!(passages[100].id, "r2-0");
    assert_eq!(passages[229].id, "r3-29");
    let pages: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| (r.body["PageSize"].as_i64(), r.body["PageNumber"].as_i64()))
        .collect();
    assert_eq!(
        pages,
        [
            (Some(100), Some(1)),
            (Some(100), Some(2)),
            (Some(100), Some(3))
        ]
    );

    // 150 stops after page 2 and keeps the best 150.
    let passages = retriever
        .retrieve(&RetrievalRequest::new("q", 150))
        .await
        .unwrap();
    assert_eq!(passages.len(), 150);
    assert_eq!(passages[149].id, "r2-49");
    assert_eq!(fake.requests().len(), 5);
}

#[tokio::test]
async fn a_short_page_ends_paging() {
    let fake = FakeKendra::always(Reply::Ok(two_passages())).await;
    let retriever = fake.retriever().build().unwrap();
    let passages = retriever
        .retrieve(&RetrievalRequest::new("q", 60))
        .await
        .unwrap();
    assert_eq!(passages.len(), 2);
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.requests()[0].body["PageSize"], 60);
}

#[tokio::test]
async fn a_repeated_page_ends_paging() {
    let full_page = (0..100)
        .map(|i| retrieve_item(&format!("same-{i}"), "text", "HIGH"))
        .collect();
    let fake = FakeKendra::always(Reply::Ok(retrieve_response(full_page))).await;
    let retriever = fake.retriever().build().unwrap();
    let passages = retriever
        .retrieve(&RetrievalRequest::new("q", 1000))
        .await
        .unwrap();
    assert_eq!(passages.len(), 100, "no duplicates");
    assert_eq!(fake.requests().len(), 2, "page 2 added nothing new");
}

#[tokio::test]
async fn a_long_query_is_cut_at_a_word_boundary_with_a_warning() {
    let fake = FakeKendra::always(Reply::Ok(two_passages())).await;
    let retriever = fake.retriever().build().unwrap();
    let question = "serverless ".repeat(150).trim_end().to_owned(); // 1649 characters
    let retrieved = retriever
        .retrieve_with_warnings(&RetrievalRequest::new(question.clone(), 3))
        .await
        .unwrap();
    let sent = fake.requests()[0].body["QueryText"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sent.chars().count() <= MAX_QUERY_CHARS);
    assert!(question.starts_with(&sent));
    assert!(sent.ends_with("serverless"), "cut inside a word: {sent:?}");
    assert_eq!(sent.chars().count(), 91 * 11 - 1); // 91 whole words: exactly 1,000
    match retrieved.warnings.as_slice() {
        [Warning::QueryTruncated {
            original_chars,
            sent_chars,
        }] => {
            assert_eq!(*original_chars, question.chars().count());
            assert_eq!(*sent_chars, sent.chars().count());
        }
        other => panic!("expected one QueryTruncated warning, got {other:?}"),
    }
    assert_eq!(retrieved.passages.len(), 2);

    // A lower configured limit applies too.
    let short = fake.retriever().with_max_query_chars(20).build().unwrap();
    let retrieved = short
        .retrieve_with_warnings(&RetrievalRequest::new("alpha beta gamma delta epsilon", 3))
        .await
        .unwrap();
    assert_eq!(fake.requests()[1].body["QueryText"], "alpha beta gamma");
    assert_eq!(retrieved.warnings.len(), 1);
}

fn query_response() -> Value {
    let text = |t: &str| json!({"Text": t, "Highlights": []});
    json!({
        "QueryId": "q-2",
        "TotalNumberOfResults": 3,
        "ResultItems": [
            {
                "Id": "ans-1",
                "Type": "ANSWER",
                "Format": "TEXT",
                "DocumentId": "doc-a",
                "DocumentTitle": text("Lambda quotas"),
                "DocumentExcerpt": text("... 1,000 concurrent executions ..."),
                "DocumentURI": "https://docs.example.com/quotas",
                "AdditionalAttributes": [{
                    "Key": "AnswerText",
                    "ValueType": "TEXT_WITH_HIGHLIGHTS_VALUE",
                    "Value": {"TextWithHighlightsValue": text("The default concurrency quota is 1,000.")}
                }],
                "ScoreAttributes": {"ScoreConfidence": "HIGH"}
            },
            {
                "Id": "faq-1",
                "Type": "QUESTION_ANSWER",
                "DocumentId": "faq-doc",
                "DocumentExcerpt": text("excerpt of the faq"),
                "AdditionalAttributes": [
                    {"Key": "QuestionText", "ValueType": "TEXT_WITH_HIGHLIGHTS_VALUE",
                     "Value": {"TextWithHighlightsValue": text("How many functions can run at once?")}},
                    {"Key": "AnswerText", "ValueType": "TEXT_WITH_HIGHLIGHTS_VALUE",
                     "Value": {"TextWithHighlightsValue": text("Up to your concurrency quota.")}}
                ],
                "ScoreAttributes": {"ScoreConfidence": "VERY_HIGH"}
            },
            {
                "Id": "doc-1",
                "Type": "DOCUMENT",
                "DocumentId": "doc-b",
                "DocumentTitle": text("Scaling"),
                "DocumentExcerpt": text("Each instance serves one request at a time."),
                "DocumentURI": "https://docs.example.com/scaling",
                "DocumentAttributes": [{"Key": "_authors", "Value": {"StringListValue": ["a", "b"]}}],
                "ScoreAttributes": {"ScoreConfidence": "NOT_AVAILABLE"}
            }
        ]
    })
}

#[tokio::test]
async fn the_query_api_maps_answers_faqs_and_documents() {
    let fake = FakeKendra::always(Reply::Ok(query_response())).await;
    let retriever = fake.retriever().with_api(KendraApi::Query).build().unwrap();
    let mut req = RetrievalRequest::new("concurrency quota", 10);
    req.user = Some(alice());
    let passages = retriever.retrieve(&req).await.unwrap();

    let sent = &fake.requests()[0];
    assert_eq!(sent.target, "AWSKendraFrontendService.Query");
    assert_eq!(sent.body["IndexId"], INDEX);
    assert_eq!(sent.body["QueryText"], "concurrency quota");
    assert_eq!(sent.body["PageSize"], 10);
    assert_eq!(sent.body["UserContext"]["UserId"], "alice");

    let texts: Vec<_> = passages.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "The default concurrency quota is 1,000.",
            "Up to your concurrency quota.",
            "Each instance serves one request at a time."
        ]
    );
    assert_eq!(passages[0].title.as_deref(), Some("Lambda quotas"));
    assert_eq!(passages[0].score, Some(0.75));
    assert_eq!(passages[0].attributes[RESULT_TYPE_ATTRIBUTE], "ANSWER");
    assert_eq!(
        passages[1].attributes[QUESTION_ATTRIBUTE],
        "How many functions can run at once?"
    );
    assert_eq!(passages[2].score, None);
    assert_eq!(passages[2].attributes["_authors"], json!(["a", "b"]));
}

#[tokio::test]
async fn query_is_the_fallback_when_retrieve_finds_nothing() {
    let fake = FakeKendra::start(|req, _| match req.operation.as_str() {
        "Retrieve" => Reply::Ok(retrieve_response(vec![])),
        _ => Reply::Ok(query_response()),
    })
    .await;
    let retriever = fake.retriever().with_query_fallback(true).build().unwrap();
    let mut req = RetrievalRequest::new("concurrency", 2);
    req.user = Some(alice());
    req.filter = Some(Filter::Equals {
        key: "_category".into(),
        value: json!("faq"),
    });
    let passages = retriever.retrieve(&req).await.unwrap();
    let ops: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.operation.clone())
        .collect();
    assert_eq!(ops, ["Retrieve", "Query"]);
    // The fallback carries the same filter and user.
    let (first, second) = (&fake.requests()[0].body, &fake.requests()[1].body);
    assert_eq!(first["AttributeFilter"], second["AttributeFilter"]);
    assert_eq!(first["UserContext"], second["UserContext"]);
    assert_eq!(passages.len(), 2);
    assert_eq!(passages[0].id, "ans-1");

    // Without the fallback an empty Retrieve is an empty answer.
    let plain = fake.retriever().build().unwrap();
    assert!(plain.retrieve(&req).await.unwrap().is_empty());
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn minimum_confidence_drops_weaker_passages() {
    let fake = FakeKendra::always(Reply::Ok(retrieve_response(vec![
        retrieve_item("low", "weak", "LOW"),
        retrieve_item("high", "strong", "HIGH"),
        retrieve_item("medium", "middling", "MEDIUM"),
        retrieve_item("na", "not english", "NOT_AVAILABLE"),
    ])))
    .await;
    let retriever = fake
        .retriever()
        .with_min_confidence(Confidence::Medium)
        .build()
        .unwrap();
    let passages = retriever
        .retrieve(&RetrievalRequest::new("q", 10))
        .await
        .unwrap();
    let ids: Vec<_> = passages.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["high", "medium", "na"]);
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_then_succeeds() {
    let fake = FakeKendra::start(|_, n| {
        if n < 2 {
            Reply::error(400, "ThrottlingException", "Rate exceeded")
        } else {
            Reply::Ok(two_passages())
        }
    })
    .await;
    let retriever = fake.retriever().build().unwrap();
    let passages = retriever
        .retrieve(&RetrievalRequest::new("q", 2))
        .await
        .unwrap();
    assert_eq!(passages.len(), 2);
    assert_eq!(
        fake.requests().len(),
        3,
        "two throttled attempts, then success"
    );
}

#[tokio::test]
async fn the_retrievers_retry_config_overrides_the_clients() {
    // Requests 0 and 1 are throttled, later ones succeed.
    let fake = FakeKendra::start(|_, n| {
        if n <= 1 {
            Reply::error(400, "ThrottlingException", "Rate exceeded")
        } else {
            Reply::Ok(two_passages())
        }
    })
    .await;
    let no_retry = fake
        .client()
        .config()
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .build();
    let client = aws_sdk_kendra::Client::from_conf(no_retry);
    let bare = KendraRetriever::builder()
        .with_client(client.clone())
        .with_index_id(INDEX)
        .build()
        .unwrap();
    let err = bare
        .retrieve(&RetrievalRequest::new("q", 2))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(fake.requests().len(), 1, "the client alone does not retry");

    let retrying = KendraRetriever::builder()
        .with_client(client)
        .with_index_id(INDEX)
        .with_retry_config(support::fast_retry())
        .build()
        .unwrap();
    let passages = retrying
        .retrieve(&RetrievalRequest::new("q", 2))
        .await
        .unwrap();
    assert_eq!(passages.len(), 2);
    assert_eq!(
        fake.requests().len(),
        3,
        "one throttled attempt, then success"
    );
}

#[tokio::test]
async fn persistent_throttling_and_5xx_are_retryable_errors() {
    for (status, kind) in [
        (400, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ] {
        let fake = FakeKendra::always(Reply::error(status, kind, "try later")).await;
        let retriever = fake.retriever().build().unwrap();
        let err = retriever
            .retrieve(&RetrievalRequest::new("q", 2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Retrieval {
                    retryable: true,
                    ..
                }
            ),
            "{kind}: {err}"
        );
        assert!(err.to_string().contains(INDEX), "{err}");
        assert!(
            err.to_string().contains("try later"),
            "service message kept: {err}"
        );
        assert_eq!(fake.requests().len(), 3, "{kind}: the SDK tried 3 times");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    // A port that was open a moment ago and is now closed: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let fake = FakeKendra::always(Reply::Ok(two_passages())).await;
    let client = aws_sdk_kendra::Client::from_conf(
        fake.client()
            .config()
            .to_builder()
            .endpoint_url(url)
            .build(),
    );
    let retriever = KendraRetriever::builder()
        .with_client(client)
        .with_index_id(INDEX)
        .build()
        .unwrap();
    let err = retriever
        .retrieve(&RetrievalRequest::new("q", 2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Retrieval {
                retryable: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("could not be sent"), "{err}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn unknown_index_access_denied_and_validation_fail_at_once() {
    for (kind, says) in [
        ("ResourceNotFoundException", "was not found"),
        ("AccessDeniedException", "was denied"),
        ("ValidationException", "rejected"),
    ] {
        let fake = FakeKendra::always(Reply::error(400, kind, "the service's own words")).await;
        let retriever = fake.retriever().build().unwrap();
        let err = retriever
            .retrieve(&RetrievalRequest::new("q", 2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Retrieval {
                    retryable: false,
                    ..
                }
            ),
            "{kind}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(INDEX),
            "{kind}: names the index: {message}"
        );
        assert!(message.contains(says), "{kind}: {message}");
        assert!(message.contains("the service's own words"), "{message}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "SDK error kept as source"
        );
        assert_eq!(fake.requests().len(), 1, "{kind} is not retried");
    }
}

#[tokio::test]
async fn a_malformed_response_is_a_typed_error_not_a_panic() {
    for body in [
        "{not json",
        r#"{"ResultItems": "not a list"}"#,
        r#"{"ResultItems": [{"Id": 7}]}"#,
    ] {
        let fake = FakeKendra::always(Reply::Raw { status: 200, body }).await;
        let retriever = fake.retriever().build().unwrap();
        let err = retriever
            .retrieve(&RetrievalRequest::new("q", 2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Retrieval {
                    retryable: false,
                    ..
                }
            ),
            "{body}: {err}"
        );
        assert!(err.to_string().contains("malformed"), "{body}: {err}");
        assert_eq!(fake.requests().len(), 1);
    }
}

#[tokio::test]
async fn bad_requests_never_reach_kendra() {
    let fake = FakeKendra::always(Reply::Ok(two_passages())).await;
    let retriever = fake
        .retriever()
        .with_user_context_required(true)
        .build()
        .unwrap();
    let with_user = |mut req: RetrievalRequest| {
        req.user = Some(alice());
        req
    };
    let mut bad_filter = with_user(RetrievalRequest::new("q", 2));
    bad_filter.filter = Some(Filter::Raw(json!({"EqualsTo": {"Key": "k"}})));
    let mut float_filter = with_user(RetrievalRequest::new("q", 2));
    float_filter.filter = Some(Filter::Equals {
        key: "k".into(),
        value: json!(0.5),
    });
    let mut empty_user = RetrievalRequest::new("q", 2);
    empty_user.user = Some(UserContext::default());
    let cases = [
        (bad_filter, "filter"),
        (float_filter, "filter"),
        (RetrievalRequest::new("q", 2), "user"),
        (empty_user, "user"),
        (with_user(RetrievalRequest::new("   ", 2)), "query"),
        (with_user(RetrievalRequest::new("q", 0)), "top_k"),
    ];
    for (req, expected) in cases {
        match retriever.retrieve(&req).await {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected InvalidInput({expected}), got {other:?}"),
        }
    }
    assert!(fake.requests().is_empty());
}
