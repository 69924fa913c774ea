//! The `$connect` and `$disconnect` routes' function: checks the page's origin and selects
//! the `rag.v1` subprotocol ([`rag_lambda::connect`]). `RAG_ALLOWED_ORIGINS` lists the page
//! origins allowed (comma-separated; unset: any).

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use rag_lambda::config::allowed_origins;
use rag_lambda::connect::ConnectHandler;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let handler = ConnectHandler::new()
        .with_allowed_origins(allowed_origins(|name| std::env::var(name).ok()));
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let response = handler.handle(&event.payload);
            async move { Ok::<_, lambda_runtime::Error>(response) }
        },
    ))
    .await
}
