//! The router's state, shared by every handler.

use crate::graphql::AppSchema;
use crate::service::AppState;

/// Router state: the schema plus the application state injected into each GraphQL request.
#[derive(Clone)]
pub struct HttpState {
    /// The schema GraphQL requests execute against.
    pub schema: AppSchema,
    /// The application state (also injected into each GraphQL request).
    pub app: AppState,
    /// This replica's rate limits.
    pub limits: std::sync::Arc<super::guard::RateLimits>,
}
