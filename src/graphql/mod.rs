//! The GraphQL schema: one `build_schema` used by the server, every test and the SDL export.

pub mod context;
pub mod cost;
pub mod documents;
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

/// Builds the schema with its depth and cost limits (and introspection, unless turned off). Request data (`AppState`,
/// `RequestMeta`) is attached per request by the HTTP layer (per operation on a WebSocket, by
/// [`extensions::RequestContext`]), so the schema itself needs no
/// database and `schema.graphql` can be exported offline from this same function.
pub fn build_schema(limits: &LimitsConfig) -> AppSchema {
    let builder = Schema::build(query::QueryRoot, mutation::MutationRoot, subscription::SubscriptionRoot)
        // Depth and cost are limited by `limits::QueryLimits` (introspection has a depth budget of
        // its own; the cost model is `cost`, not async-graphql's field-counting complexity).
        .extension(extensions::ErrorCodes)
        .extension(limits::QueryLimits::new(limits.into()).with_cost(limits.into()))
        .extension(extensions::RequestContext);
    if limits.introspection { builder.finish() } else { builder.disable_introspection().finish() }
}

/// The schema in SDL, as clients see it by introspection: async-graphql's SDL with the
/// `@specifiedBy` URLs and the schema description its `__schema { description }` reports (both
/// of which `sdl()` leaves out), so that a client schema built from the standard introspection
/// query equals `schema.graphql` (a test checks it with graphql-js).
pub async fn sdl(schema: &AppSchema) -> String {
    let sdl = schema.sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by());
    let answer = schema.execute("{ __schema { description } }").await.data.into_json().unwrap_or_default();
    match answer["__schema"]["description"].as_str() {
        Some(description) if !description.is_empty() && !description.contains("\"\"\"") => {
            sdl.replacen("\nschema {", &format!("\n\"\"\"\n{description}\n\"\"\"\nschema {{"), 1)
        }
        _ => sdl,
    }
}
