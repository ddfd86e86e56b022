//! The web pages — GraphiQL at `GET /graphql`, the monitoring dashboard at `/dashboard`, the
//! REST docs at `/docs` (Swagger UI) and `/redoc`, the landing page at `/` — and their scripts
//! and styles under `/assets/`.
//!
//! They are built from pinned npm packages by `make web` (`web/`: `npm ci`, then esbuild into
//! `web/dist/`) and embedded into the binary at compile time, so one binary serves everything
//! with no CDN and no network. Asset file names carry a content hash, so they are cached for a
//! year (`immutable`); the pages themselves are revalidated on every load and pick up a new build.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// `web/dist`, as built when this binary was compiled. `allow_missing` lets the crate compile
/// before the web build has run (clippy, unit tests); the pages then answer 503 saying so.
#[derive(RustEmbed)]
#[folder = "web/dist/"]
#[allow_missing = true]
struct WebDist;

/// Cache policy of content-hashed assets.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        _ => "application/octet-stream",
    }
}

/// The embedded bytes, without copying them.
fn body(data: Cow<'static, [u8]>) -> Body {
    match data {
        Cow::Borrowed(bytes) => Body::from(Bytes::from_static(bytes)),
        Cow::Owned(bytes) => Body::from(bytes),
    }
}

/// A page (`graphiql.html`, `dashboard.html`, `index.html`).
pub fn page(name: &str) -> Response {
    if let Some(file) = WebDist::get(name) {
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body(file.data),
        )
            .into_response()
    } else {
        tracing::error!(page = name, "the web pages are not in this binary: build them with `make web`, then rebuild");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
            "The web pages were not built into this binary. Run `make web` (npm ci and the esbuild \
             build in web/), then rebuild the server; `make run` does both.\n",
        )
            .into_response()
    }
}

/// `GET /`.
pub async fn index() -> Response {
    page("index.html")
}

/// `GET /dashboard`.
pub async fn dashboard() -> Response {
    page("dashboard.html")
}

/// `GET /docs`: Swagger UI over `/openapi.json`.
pub async fn docs() -> Response {
    page("docs.html")
}

/// `GET /redoc`: ReDoc over `/openapi.json`.
pub async fn redoc() -> Response {
    page("redoc.html")
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let path = format!("assets/{file}");
    match WebDist::get(&path) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path))),
                (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
            ],
            body(asset.data),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// Total bytes of the embedded web build (reported at start).
pub fn embedded_bytes() -> usize {
    WebDist::iter().filter_map(|path| WebDist::get(&path)).map(|file| file.data.len()).sum()
}
