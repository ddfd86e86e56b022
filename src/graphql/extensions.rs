//! GraphQL extensions.
//!
//! - [`ErrorCodes`]: every error leaves with an `extensions.code`. Resolver errors already carry
//!   one (see [`crate::error`]); errors raised by async-graphql itself before execution (syntax,
//!   unknown fields, wrong argument types, depth limits) get
//!   `GRAPHQL_PARSE_FAILED` or `GRAPHQL_VALIDATION_FAILED` here.
//! - [`RequestContext`]: every operation has a [`RequestMeta`] and its errors name its request id;
//!   an operation sent over a WebSocket gets what an HTTP request gets from its handler (its own
//!   request id and clock, the `REQUEST_TIMEOUT_MS` budget).

use std::any::TypeId;
use std::sync::{Arc, OnceLock};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tracing::Instrument;

use crate::error::{AppError, codes};
use crate::service::{AppState, RequestMeta, Route};

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
        .inspect(count_error)
        .collect();
    response
}

/// `graphql_errors_total{code}`: GraphQL answers errors with HTTP 200, so this, not the status
/// code, is how an alert sees the service failing. The label takes only the documented codes.
fn count_error(err: &ServerError) {
    let code = err.extensions.as_ref().and_then(|ext| match ext.get("code") {
        Some(async_graphql::Value::String(code)) => codes::ALL.iter().find(|c| **c == code.as_str()).copied(),
        _ => None,
    });
    metrics::counter!("graphql_errors_total", "code" => code.unwrap_or("OTHER")).increment(1);
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
        next.run(ctx, query, variables).await.map_err(|err| with_default_code(err, codes::GRAPHQL_PARSE_FAILED))
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

/// Connection data of a WebSocket (session data): what each operation on it needs to build its
/// own [`RequestMeta`].
#[derive(Debug, Clone)]
pub struct WsConnection {
    /// The User-Agent of the upgrade request.
    pub client: Option<String>,
}

/// The rate limit each operation on a WebSocket passes (the HTTP layer's, for the connection's
/// caller and address): `Err((message, retry after seconds))` when over it.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct WsRateGate(pub Arc<dyn Fn(&crate::auth::Caller) -> Result<(), (String, u64)> + Send + Sync>);

/// Factory for [`RequestContext`].
pub struct RequestContext;

impl ExtensionFactory for RequestContext {
    fn create(&self) -> Arc<dyn Extension> {
        // One instance per operation: it remembers that operation's request id.
        Arc::new(RequestContextExtension::default())
    }
}

#[derive(Default)]
struct RequestContextExtension {
    /// Set in `prepare_request`; read by the hooks that wrap the whole operation.
    request_id: Arc<OnceLock<String>>,
}

/// Sets `extensions.requestId` on every error of `response`.
pub(crate) fn with_request_id(mut response: Response, request_id: Option<&String>) -> Response {
    if let Some(id) = request_id {
        for error in &mut response.errors {
            error.extensions.get_or_insert_with(Default::default).set("requestId", id.as_str());
        }
    }
    response
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestContextExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let attached = request.data.get(&TypeId::of::<RequestMeta>()).and_then(|d| d.downcast_ref::<RequestMeta>());
        let request_id = match (attached, ctx.data_opt::<WsConnection>()) {
            (Some(meta), _) => Some(meta.request_id.clone()),
            (None, Some(socket)) => {
                let mut caller = ctx.data_opt::<crate::auth::Caller>().cloned().unwrap_or_default();
                // The socket's key was checked when it connected; each operation checks it again,
                // so a revoked or expired key stops working on open sockets too.
                if let (crate::auth::Caller::Key(key), Some(state)) = (&caller, ctx.data_opt::<AppState>())
                    && !state.keys.is_active(&key.id, chrono::Utc::now())
                {
                    caller = crate::auth::Caller::Refused("the API key has been revoked or has expired".into());
                }
                let caller = &caller;
                if let Some(gate) = ctx.data_opt::<WsRateGate>()
                    && let Err((message, seconds)) = (gate.0)(caller)
                {
                    let mut err = ServerError::new(message, None);
                    let ext = err.extensions.get_or_insert_with(Default::default);
                    ext.set("code", codes::RATE_LIMITED);
                    ext.set("retryAfterSeconds", seconds);
                    return Err(err);
                }
                let mut meta =
                    RequestMeta::new(uuid::Uuid::new_v4().to_string(), Route::Graphql, socket.client.clone());
                meta.operation = request.operation_name.clone();
                meta.api_key_id = caller.key_id().map(str::to_owned);
                let id = meta.request_id.clone();
                request.data.insert(meta);
                request.data.insert(caller.clone());
                Some(id)
            }
            (None, None) => None,
        };
        if let Some(id) = request_id {
            let _ = self.request_id.set(id);
        }
        next.run(ctx, request).await
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        with_request_id(next.run(ctx).await, self.request_id.get())
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // WebSocket operations (queries too) run as streams; the id is known once the stream has
        // prepared the request, so it is read per item.
        let request_id = Arc::clone(&self.request_id);
        next.run(ctx, stream).map(move |response| with_request_id(response, request_id.get())).boxed()
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        // Over HTTP the handler bounds the whole request; a WebSocket has no handler per operation.
        let budget = match (ctx.data_opt::<WsConnection>(), ctx.data_opt::<AppState>()) {
            (Some(_), Some(state)) => Some(state.config.limits.request_timeout()),
            _ => None,
        };
        match budget {
            None => next.run(ctx, operation_name).await,
            Some(budget) => {
                // No TraceLayer span wraps a WebSocket operation: this one puts its request id on its log lines.
                let span = tracing::info_span!(
                    "ws_operation",
                    request_id = %self.request_id.get().map(String::as_str).unwrap_or_default(),
                    operation = operation_name.unwrap_or_default(),
                );
                match tokio::time::timeout(budget, next.run(ctx, operation_name)).instrument(span).await {
                    Ok(response) => response,
                    Err(_) => {
                        Response::from_errors(vec![AppError::Timeout(budget.as_millis() as u64).into_server_error()])
                    }
                }
            }
        }
    }
}
