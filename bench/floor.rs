//! BENCHMARK ONLY: the floor under the service's per-request cost, on the same stack and runtime.
//! `bench/load.sh` runs it next to the service so the gap between the two is the service's own work
//! (scoring, validation of the real input type, the log row, the writer), measured side by side.
//!
//! - `floor http PORT`: axum answering `POST /graphql` with a fixed body of the service's size:
//!   the kernel's loopback TCP, hyper and axum, nothing else.
//! - `floor graphql PORT`: async-graphql behind async-graphql-axum's extractor, with the service's
//!   parsed-document cache, a `predictPrice(input)` resolver that returns `{id, price}` without
//!   scoring or logging: what async-graphql itself costs for the benchmark's request.
//!
//! Built by `cargo build --release --example floor`; never part of the service.

use std::net::SocketAddr;

use async_graphql::{EmptyMutation, EmptySubscription, InputObject, Object, Schema, SimpleObject};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use house_price_api::graphql::limits::{DepthLimits, QueryLimits};

/// The service uses mimalloc too (src/main.rs): the floor must not pay for a slower allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The benchmark's input (`bench/predict.lua` sends these three fields).
#[derive(InputObject)]
struct HouseInput {
    /// Living area, square feet.
    square_feet: i32,
    /// Bedrooms.
    bedrooms: i32,
    /// Bathrooms.
    bathrooms: f64,
}

/// The answer's shape, as the service's `Prediction { id price }`.
#[derive(SimpleObject)]
struct Prediction {
    /// A fresh id, as the service's log row id.
    id: uuid::Uuid,
    /// A price computed without a model.
    price: f64,
}

struct Query;

#[Object]
impl Query {
    /// The trivial resolver: no scoring, no log row.
    async fn predict_price(&self, input: HouseInput) -> Prediction {
        let rooms = f64::from(input.bedrooms) + input.bathrooms;
        Prediction { id: uuid::Uuid::now_v7(), price: f64::from(input.square_feet) * 100.0 + rooms }
    }
}

type FloorSchema = Schema<Query, EmptyMutation, EmptySubscription>;

async fn graphql(State(schema): State<FloorSchema>, request: GraphQLRequest) -> GraphQLResponse {
    schema.execute(request.into_inner()).await.into()
}

/// The service's answer to `bench/predict.lua`, byte for byte in size.
const FIXED: &str =
    r#"{"data":{"predictPrice":{"id":"01a231bf-1052-721d-bec7-470b225d87b5","price":141475.02983911315}}}"#;

async fn fixed(_body: axum::body::Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], FIXED)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(port)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: floor http|graphql PORT");
    };
    let app = match mode.as_str() {
        "http" => Router::new().route("/graphql", post(fixed)),
        "graphql" => {
            let limits = DepthLimits { query: 16, introspection: 16, introspection_allowed: true };
            let schema =
                Schema::build(Query, EmptyMutation, EmptySubscription).extension(QueryLimits::new(limits)).finish();
            Router::new().route("/graphql", post(graphql)).with_state(schema)
        }
        other => anyhow::bail!("unknown mode `{other}`: http or graphql"),
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // The service's runtime: tokio's multi-threaded default, one worker per allowed core.
    tokio::runtime::Runtime::new()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
