//! The `$default` route's function: answers each message, streaming the frames back with
//! PostToConnection. Its settings are the environment variables of [`rag_lambda::config`].

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::{service_fn, LambdaEvent};
use rag_lambda::config::AskConfig;
use rag_lambda::deadline_of;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = AskConfig::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let handler = config.handler(&sdk)?;
    tracing::info!(model = %config.model_id, table = %config.table, "ask function ready");
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let handler = handler.clone();
            async move {
                let deadline = deadline_of(&event.context);
                let response: ApiGatewayProxyResponse =
                    handler.respond(&event.payload, deadline).await?;
                Ok::<_, lambda_runtime::Error>(response)
            }
        },
    ))
    .await
}
