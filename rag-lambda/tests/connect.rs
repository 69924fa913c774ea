//! The `$connect` and `$disconnect` function with the routes' event JSON, in the shapes API
//! Gateway sends (those of aws_lambda_events' fixtures, with the authorizer's context and a
//! browser's headers).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use rag_lambda::connect::ConnectHandler;
use serde_json::{json, Value};

fn connect_event(headers: Value, query: Value) -> ApiGatewayWebsocketProxyRequest {
    let mut base = json!({
        "Host": "abcd1234.execute-api.us-east-1.amazonaws.com",
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Amzn-Trace-Id": "Root=1-65c66a9e-1234567890abcdef",
        "X-Forwarded-For": "192.0.2.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https"
    });
    for (k, v) in headers.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(json!({
        "headers": base,
        "queryStringParameters": query,
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "extendedRequestId": "ABCD1234=",
            "requestTime": "09/Feb/2024:18:23:27 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": 1_707_503_007_396_i64,
            "requestTimeEpoch": 1_707_503_007_396_i64,
            "identity": {"sourceIp": "192.0.2.1", "userAgent": "Mozilla/5.0"},
            "requestId": "ABCD1234=",
            "domainName": "abcd1234.execute-api.us-east-1.amazonaws.com",
            "connectionId": "AAAA1234=",
            "apiId": "abcd1234",
            "authorizer": {"principalId": "user-1", "groups": "staff", "integrationLatency": 41}
        },
        "isBase64Encoded": false
    }))
    .expect("the $connect event deserializes")
}

fn body(response: &aws_lambda_events::apigw::ApiGatewayProxyResponse) -> String {
    match &response.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => text.clone(),
        other => panic!("a text body, got {other:?}"),
    }
}

#[test]
fn a_browser_offering_rag_v1_and_its_token_gets_only_rag_v1_back() {
    let event = connect_event(
        json!({"Origin": "https://chat.example.com", "Sec-WebSocket-Protocol": "rag.v1, bearer.eyJhbGciOiJSUzI1NiJ9.e30.sig"}),
        json!({}),
    );
    let handler = ConnectHandler::new().with_allowed_origins(["https://chat.example.com".into()]);
    let response = handler.handle(&event);
    assert_eq!(response.status_code, 200);
    assert_eq!(response.headers["sec-websocket-protocol"], "rag.v1");
    assert!(
        !format!("{response:?}").contains("eyJ"),
        "the token is never echoed"
    );
}

#[test]
fn a_client_without_subprotocols_connects_without_one() {
    let response = ConnectHandler::new().handle(&connect_event(json!({}), json!({})));
    assert_eq!(response.status_code, 200);
    assert!(response.headers.get("sec-websocket-protocol").is_none());
}

#[test]
fn pages_from_other_origins_tokens_in_the_url_and_other_subprotocols_are_refused() {
    let handler = ConnectHandler::new().with_allowed_origins(["https://chat.example.com/".into()]);
    let other = handler.handle(&connect_event(
        json!({"Origin": "https://evil.example", "Sec-WebSocket-Protocol": "rag.v1"}),
        json!({}),
    ));
    assert_eq!(other.status_code, 403);
    assert!(body(&other).contains("https://evil.example"));

    let same = handler.handle(&connect_event(
        json!({"Origin": "HTTPS://CHAT.EXAMPLE.COM", "Sec-WebSocket-Protocol": "rag.v1"}),
        json!({}),
    ));
    assert_eq!(
        same.status_code, 200,
        "origins compare without case or a final slash"
    );

    let in_url = handler.handle(&connect_event(
        json!({}),
        json!({"access_token": "eyJhbGciOiJSUzI1NiJ9.e30.sig"}),
    ));
    assert_eq!(in_url.status_code, 400);
    assert!(body(&in_url).contains("token in the URL"));

    let unknown = handler.handle(&connect_event(
        json!({"Sec-WebSocket-Protocol": "chat.v2"}),
        json!({}),
    ));
    assert_eq!(unknown.status_code, 400);
}

#[test]
fn a_disconnect_is_acknowledged() {
    // aws_lambda_events' fixture of the $disconnect route.
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(json!({
        "headers": {
            "Host": "abcd1234.execute-api.us-east-1.amazonaws.com",
            "x-api-key": "",
            "X-Forwarded-For": "",
            "x-restapi": ""
        },
        "multiValueHeaders": {
            "Host": ["abcd1234.execute-api.us-east-1.amazonaws.com"],
            "x-api-key": [""],
            "X-Forwarded-For": [""],
            "x-restapi": [""]
        },
        "requestContext": {
            "routeKey": "$disconnect",
            "disconnectStatusCode": 1005,
            "eventType": "DISCONNECT",
            "extendedRequestId": "ABCD1234=",
            "requestTime": "09/Feb/2024:18:23:28 +0000",
            "messageDirection": "IN",
            "disconnectReason": "Client-side close frame status not set",
            "stage": "prod",
            "connectedAt": 1_707_503_007_396_i64,
            "requestTimeEpoch": 1_707_503_008_941_i64,
            "identity": {"sourceIp": "192.0.2.1"},
            "requestId": "ABCD1234=",
            "domainName": "abcd1234.execute-api.us-east-1.amazonaws.com",
            "connectionId": "AAAA1234=",
            "apiId": "abcd1234"
        },
        "isBase64Encoded": false
    }))
    .unwrap();
    assert_eq!(ConnectHandler::new().handle(&event).status_code, 200);
}

#[test]
fn a_message_event_is_not_this_functions_route() {
    let mut event = connect_event(json!({}), json!({}));
    event.request_context.route_key = Some("$default".into());
    assert_eq!(ConnectHandler::new().handle(&event).status_code, 400);
}
