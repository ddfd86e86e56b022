//! What every resolver needs from its context: the application state, the request's metadata,
//! and the turning of an `AppError` into a GraphQL error with its `extensions.code`.

use async_graphql::{Context, ErrorExtensions};

use crate::auth::{Caller, Scope};
use crate::error::AppError;
use crate::service::{AppState, RequestMeta};

/// Runs a resolver body and turns its `AppError` into a GraphQL error with `extensions.code`.
pub(crate) async fn resolve<T>(body: impl Future<Output = Result<T, AppError>>) -> async_graphql::Result<T> {
    body.await.map_err(|err| err.extend())
}

/// Request data the HTTP layer attaches to every operation.
pub(crate) fn data<'a, T: Send + Sync + 'static>(ctx: &Context<'a>) -> Result<&'a T, AppError> {
    ctx.data::<T>().map_err(|e| AppError::Internal(anyhow::anyhow!("missing request data: {}", e.message)))
}

/// The application state and this operation's request metadata (attached by the HTTP handler,
/// or per WebSocket operation by `super::extensions::RequestContext`).
pub(crate) fn state<'a>(ctx: &Context<'a>) -> Result<(&'a AppState, &'a RequestMeta), AppError> {
    Ok((data::<AppState>(ctx)?, data::<RequestMeta>(ctx)?))
}

/// The application state, once the caller is allowed what `scope` covers (`None`: model
/// metadata) under `ACCESS`; `UNAUTHENTICATED` or `FORBIDDEN` otherwise. Also returns the
/// accepted key's id (`model_events` records who reloaded).
pub(crate) fn authorize<'a>(
    ctx: &Context<'a>,
    scope: Option<Scope>,
) -> Result<(&'a AppState, Option<&'a str>), AppError> {
    let state = data::<AppState>(ctx)?;
    let caller = ctx.data_opt::<Caller>().unwrap_or(&Caller::Anonymous);
    let key = caller.require(state.config.access.access, scope, state.keys.is_empty())?;
    Ok((state, key))
}
