//! GraphQL extensions: every error leaves with an `extensions.code`.
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

fn finish(mut response: Response) -> Response {
    response.errors = std::mem::take(&mut response.errors)
        .into_iter()
        // Resolver errors all carry a code; what is left are request-shape problems raised by
        // async-graphql outside parse/validation (unknown operation name, missing variable).
        .map(|err| with_default_code(err, codes::GRAPHQL_VALIDATION_FAILED))
        .collect();
    response
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        finish(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(finish).boxed()
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
