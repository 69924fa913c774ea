//! The `$connect` route's Lambda REQUEST authorizer ([`rag_lambda::authorizer`]): verifies the
//! Cognito JWT a client offers and answers with an IAM policy.
//!
//! Settings: `RAG_COGNITO_USER_POOL_ID` (the pool, `<region>_<id>`), `RAG_COGNITO_CLIENT_ID`
//! (the app client ids whose tokens are taken, comma-separated) and `RAG_TOKEN_USE` (`id`, the
//! default, or `access`). The pool's signing keys are fetched at cold start, so a wrong pool
//! fails the init instead of every connection.

use std::process::ExitCode;
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use rag_lambda::authorizer::{jwt_config, Authorizer};
use rag_lambda::jwt::JwtVerifier;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Plain lines, or JSON with the function's JSON log format (AWS_LAMBDA_LOG_FORMAT);
    // the level from AWS_LAMBDA_LOG_LEVEL or RUST_LOG, INFO by default.
    lambda_runtime::tracing::init_default_subscriber();
    let authorizer = match ready().await {
        Ok(authorizer) => Arc::new(authorizer),
        Err(e) => {
            tracing::error!(error = %e, "the authorizer cannot start");
            return ExitCode::FAILURE;
        }
    };
    let served = lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| {
            let authorizer = Arc::clone(&authorizer);
            async move { authorizer.authorize(event.payload).await }
        },
    ))
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

/// The authorizer of the environment's settings, with the pool's keys loaded.
async fn ready() -> Result<Authorizer, String> {
    let config = jwt_config(|name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
    let verifier = JwtVerifier::new(config).map_err(|e| e.to_string())?;
    let url = verifier.config().jwks_url.clone();
    match verifier.load().await {
        Ok(0) => return Err(format!("the JWKS at {url} holds no RS256 signing key")),
        Ok(n) => tracing::info!(keys = n, jwks = %url, client_ids = ?verifier.config().client_ids,
            token_use = %verifier.config().token_use, "authorizer ready"),
        Err(e) => return Err(e.to_string()),
    }
    Ok(Authorizer::new(verifier))
}
