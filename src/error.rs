//! `AppError`: the one error type of the API layer, and its mapping to GraphQL error codes.
//!
//! Each variant's doc says what the client sees. Server faults (`Internal`, and the cause behind
//! `Unavailable`) are logged here with their full cause chain and never sent: the client gets a
//! generic message and the request id to quote.

use async_graphql::ErrorExtensions;

/// Stable error codes, put in `extensions.code` (Apollo conventions) and listed in README.
pub mod codes {
    /// Invalid argument value; `extensions.field` names it.
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// The requested object does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The document is not valid GraphQL syntax.
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// Query rejected before execution (unknown field, wrong argument type, depth or complexity
    /// limit, operations per request).
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// The request exceeded `REQUEST_TIMEOUT_MS`.
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    /// No valid `x-api-key` was presented for an operation that needs one.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The API key is valid but lacks the scope the operation needs (or no keys are configured).
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// `reloadModels` found an unusable model; the previous set keeps serving.
    pub const MODEL_LOAD_FAILED: &str = "MODEL_LOAD_FAILED";
    /// A dependency (the request log in PostgreSQL) is unreachable; retry later.
    pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
    /// A bug or unexpected fault; details are in the server log under the request id.
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
    /// The request's cost (estimated database work) or its count of aliases, directives or
    /// tokens is over its limit; `extensions.limit` says which, with `cost` and `budget` (cost)
    /// or `count` and `max` (the others). Nothing ran.
    pub const QUERY_TOO_COSTLY: &str = "QUERY_TOO_COSTLY";
    /// The client (its API key, or its address without one) is over its rate (status 429, with
    /// `Retry-After`; `extensions.retryAfterSeconds` on GraphQL).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The HTTP body is larger than `MAX_BODY_BYTES` (status 413).
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// The HTTP request is not a GraphQL request: a body that is not JSON or lacks a string
    /// `query`, a parameter of the wrong type, a mutation over GET (status 400, or 405 for GET).
    pub const BAD_REQUEST: &str = "BAD_REQUEST";

    /// Every code above (the label values of `graphql_errors_total`).
    pub const ALL: &[&str] = &[
        BAD_USER_INPUT,
        NOT_FOUND,
        GRAPHQL_PARSE_FAILED,
        GRAPHQL_VALIDATION_FAILED,
        REQUEST_TIMEOUT,
        UNAUTHENTICATED,
        FORBIDDEN,
        MODEL_LOAD_FAILED,
        SERVICE_UNAVAILABLE,
        INTERNAL_SERVER_ERROR,
        QUERY_TOO_COSTLY,
        RATE_LIMITED,
        PAYLOAD_TOO_LARGE,
        BAD_REQUEST,
    ];
}

/// Errors a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `BAD_USER_INPUT` with `extensions.field` = the argument path (e.g. `input.squareFeet`).
    #[error("{field}: {message}")]
    InvalidInput {
        /// Path of the offending argument.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// `NOT_FOUND`: the message names what was looked up.
    #[error("{0}")]
    NotFound(String),
    /// `SERVICE_UNAVAILABLE`: the request log could not commit (or read) rows. The message is generic;
    /// the cause is logged.
    #[error("the prediction log is unavailable, the request was not recorded; retry later")]
    Unavailable(#[source] anyhow::Error),
    /// `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),
    /// `FORBIDDEN`.
    #[error("{0}")]
    Forbidden(String),
    /// `MODEL_LOAD_FAILED`: the message names the model file and the cause (callers are
    /// authenticated operators).
    #[error("model reload failed, the previous models keep serving: {0}")]
    ModelLoad(String),
    /// `REQUEST_TIMEOUT`.
    #[error("the request took longer than {0} ms")]
    Timeout(u64),
    /// `INTERNAL_SERVER_ERROR`: generic message; the cause chain is logged.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    /// A `BAD_USER_INPUT` error for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput { field: field.into(), message: message.into() }
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => codes::BAD_USER_INPUT,
            Self::NotFound(_) => codes::NOT_FOUND,
            Self::Unauthenticated(_) => codes::UNAUTHENTICATED,
            Self::Forbidden(_) => codes::FORBIDDEN,
            Self::ModelLoad(_) => codes::MODEL_LOAD_FAILED,
            Self::Unavailable(_) => codes::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => codes::REQUEST_TIMEOUT,
            Self::Internal(_) => codes::INTERNAL_SERVER_ERROR,
        }
    }

    /// A copy of an input error (other kinds become an internal error with the same message, which
    /// does not happen for parsed inputs).
    pub fn clone_input_error(&self) -> Self {
        match self {
            Self::InvalidInput { field, message } => Self::invalid(field.clone(), message.clone()),
            other => Self::Internal(anyhow::anyhow!("{other}")),
        }
    }

    /// The offending field, for input errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidInput { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Logs server-side faults with their cause chain (`{:#}` prints every `source()`).
    fn log_if_fault(&self) {
        match self {
            Self::Unavailable(cause) => warn_unavailable(cause),
            Self::Internal(cause) => tracing::error!(error = %format!("{cause:#}"), "internal error"),
            _ => {}
        }
    }
}

/// Logs a `SERVICE_UNAVAILABLE` cause, at most once per second: when the log is saturated or away
/// every request fails the same way, and a line per request would flood the server log at the
/// request rate. The line says how many failures it stands for since the previous one.
fn warn_unavailable(cause: &anyhow::Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if LAST_SECOND.swap(now, Ordering::Relaxed) == now {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::warn!(error = %format!("{cause:#}"), suppressed, "request log unavailable");
}

impl From<sqlx::Error> for AppError {
    /// What [`crate::db::DbFault`] calls unavailable (the connection lost, no connection to be
    /// had, the server refusing work) is `SERVICE_UNAVAILABLE`. Anything else is a bug or schema
    /// mismatch: `INTERNAL_SERVER_ERROR`.
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            return Self::Unavailable(err.into());
        }
        Self::Internal(anyhow::Error::new(err).context("database query failed"))
    }
}

/// Whether `err` means "the database cannot serve now" rather than "this query is wrong".
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    crate::db::DbFault::of(err).is_unavailable()
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        self.log_if_fault();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", self.code());
            if let Some(field) = self.field() {
                ext.set("field", field);
            }
        })
    }
}

impl AppError {
    /// A request-level GraphQL error (no field position), for errors raised outside resolvers.
    pub fn into_server_error(self) -> async_graphql::ServerError {
        let err = self.extend();
        let mut server_error = async_graphql::ServerError::new(err.message, None);
        server_error.extensions = err.extensions;
        server_error
    }
}

// Deliberately no `From<AppError> for async_graphql::Error`: async-graphql's blanket
// `From<T: Display>` would make `?` compile and silently drop the code. Resolvers call
// `.extend()` (see `graphql::context::resolve`).

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_all() {
        let source = include_str!("error.rs");
        let module = &source[source.find("pub mod codes").unwrap()..source.find("pub const ALL").unwrap()];
        let declared: Vec<&str> = module
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert_eq!(declared.len(), codes::ALL.len(), "{declared:?}");
        assert!(declared.iter().all(|c| codes::ALL.contains(c)), "{declared:?}");
    }

    fn extensions(err: AppError) -> (String, serde_json::Value) {
        let gql = err.extend();
        let ext = serde_json::to_value(gql.extensions.expect("extensions are set")).unwrap();
        (gql.message, ext)
    }

    #[test]
    fn invalid_input_maps_to_bad_user_input_with_field() {
        let (message, ext) = extensions(AppError::invalid("input.bedrooms", "must be between 0 and 50, got -1"));
        assert_eq!(ext["code"], "BAD_USER_INPUT");
        assert_eq!(ext["field"], "input.bedrooms");
        assert!(message.contains("got -1"));
    }

    #[test]
    fn not_found_maps_to_not_found() {
        assert_eq!(extensions(AppError::NotFound("no prediction x".into())).1["code"], "NOT_FOUND");
    }

    #[test]
    fn timeout_maps_to_request_timeout() {
        assert_eq!(extensions(AppError::Timeout(5)).1["code"], "REQUEST_TIMEOUT");
    }

    #[test]
    fn unavailable_hides_its_cause() {
        let (message, ext) = extensions(AppError::Unavailable(anyhow::anyhow!("connection refused to 10.0.0.1:5432")));
        assert_eq!(ext["code"], "SERVICE_UNAVAILABLE");
        assert!(!message.contains("10.0.0.1"), "{message}");
    }

    #[test]
    fn internal_hides_sql_and_causes() {
        let err = AppError::from(sqlx::Error::Protocol("SELECT secret FROM t".into()));
        let (message, ext) = extensions(err);
        assert_eq!(ext["code"], "INTERNAL_SERVER_ERROR");
        assert_eq!(message, "internal server error");
    }

    #[test]
    fn auth_and_reload_errors_have_their_codes() {
        assert_eq!(extensions(AppError::Unauthenticated("x".into())).1["code"], "UNAUTHENTICATED");
        assert_eq!(extensions(AppError::Forbidden("x".into())).1["code"], "FORBIDDEN");
        assert_eq!(extensions(AppError::ModelLoad("x".into())).1["code"], "MODEL_LOAD_FAILED");
    }

    #[test]
    fn pool_timeouts_are_unavailability_not_bugs() {
        assert_eq!(AppError::from(sqlx::Error::PoolTimedOut).code(), "SERVICE_UNAVAILABLE");
    }
}
