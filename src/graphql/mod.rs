//! The GraphQL schema: one `build_schema` used by the server, every test and the SDL export.

pub mod extensions;
pub mod limits;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::Schema;

use crate::config::LimitsConfig;

/// The service's schema type.
pub type AppSchema = Schema<query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot>;

/// Builds the schema with its depth and complexity limits (and introspection, unless turned off). Request data (`AppState`,
/// `RequestMeta`) is attached per request by the HTTP layer (per operation on a WebSocket, by
/// [`extensions::RequestContext`]), so the schema itself needs no
/// database and `schema.graphql` can be exported offline from this same function.
pub fn build_schema(limits: &LimitsConfig) -> AppSchema {
    let builder = Schema::build(query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot)
        // Depth is limited by `limits::QueryLimits`, which gives introspection its own budget.
        .limit_complexity(limits.max_query_complexity)
        .extension(extensions::ErrorCodes)
        .extension(limits::QueryLimits(limits.into()))
        .extension(extensions::RequestContext);
    if limits.introspection { builder.finish() } else { builder.disable_introspection().finish() }
}
