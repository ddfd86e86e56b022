//! The GraphQL schema: one `build_schema` used by the server, every test and the SDL export.

pub mod extensions;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::Schema;

use crate::config::LimitsConfig;

/// The service's schema type.
pub type AppSchema = Schema<query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot>;

/// Builds the schema with its depth and complexity limits. Request data (`AppState`,
/// `RequestMeta`) is attached per request by the HTTP layer (per operation on a WebSocket, by
/// [`extensions::RequestContext`]), so the schema itself needs no
/// database and `schema.graphql` can be exported offline from this same function.
pub fn build_schema(limits: &LimitsConfig) -> AppSchema {
    Schema::build(query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot)
        .limit_depth(limits.max_query_depth)
        .limit_complexity(limits.max_query_complexity)
        .extension(extensions::ErrorCodes)
        .extension(extensions::RequestContext)
        .finish()
}
