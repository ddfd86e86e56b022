//! GraphQL extensions: every error leaves with an `extensions.code` and the request id.
//!
//! Resolver errors already carry a code (see [`crate::error`]); errors raised by async-graphql
//! itself before execution (syntax, unknown fields, wrong argument types, depth and complexity
//! limits) get `GRAPHQL_PARSE_FAILED` or `GRAPHQL_VALIDATION_FAILED` here.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::error::codes;
use crate::service::RequestMeta;

/// Code for documents that do not parse.
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";

/// Factory for [`ErrorCodes`].
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn with_default_code(mut err: ServerError, code: &str) -> ServerError {
    let ext = err.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
    }
    err
}

fn finish(mut response: Response, meta: Option<&RequestMeta>) -> Response {
    response.errors = std::mem::take(&mut response.errors)
        .into_iter()
        .map(|err| {
            let mut err = with_default_code(err, codes::INTERNAL_SERVER_ERROR);
            if let (Some(meta), Some(ext)) = (meta, err.extensions.as_mut()) {
                ext.set("requestId", meta.request_id.as_str());
            }
            err
        })
        .collect();
    response
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let response = next.run(ctx).await;
        finish(response, ctx.data_opt::<RequestMeta>())
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(|response| finish(response, None)).boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|err| with_default_code(err, GRAPHQL_PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors.into_iter().map(|err| with_default_code(err, codes::GRAPHQL_VALIDATION_FAILED)).collect()
        })
    }
}
