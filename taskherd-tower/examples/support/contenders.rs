//! The servers compared by `compare_http` and `benches/http.rs`: the same trivial handler
//! with no limit, tower's `ConcurrencyLimitLayer`, a hand-rolled `from_fn` middleware over a
//! map of per-key semaphores, and `LimitLayer` with one and with three groups.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use taskherd::TaskPool;
use taskherd_tower::{ClassifyExt, Header, LimitLayer, PathSegment};
use tokio::sync::Semaphore;

/// High enough never to refuse in the comparison: it measures the cost of admission.
pub const LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    NoLimit,
    TowerConcurrencyLimit,
    HandRolled,
    LayerOneGroup,
    LayerThreeGroups,
}

impl Contender {
    pub const ALL: [Contender; 5] = [
        Contender::NoLimit,
        Contender::TowerConcurrencyLimit,
        Contender::HandRolled,
        Contender::LayerOneGroup,
        Contender::LayerThreeGroups,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::NoLimit => "no limit",
            Contender::TowerConcurrencyLimit => "tower ConcurrencyLimitLayer",
            Contender::HandRolled => "from_fn + per-key semaphore map",
            Contender::LayerOneGroup => "LimitLayer, 1 group",
            Contender::LayerThreeGroups => "LimitLayer, 3 groups",
        }
    }

    /// The server: `GET /work/hello` answers `ok`.
    pub fn app(self) -> Router {
        let app = Router::new().route("/work/{name}", get(|| async { "ok" }));
        match self {
            Contender::NoLimit => app,
            Contender::TowerConcurrencyLimit => {
                app.layer(tower::limit::ConcurrencyLimitLayer::new(LIMIT))
            }
            Contender::HandRolled => app.layer(middleware::from_fn_with_state(
                Semaphores::default(),
                hand_rolled,
            )),
            Contender::LayerOneGroup => {
                let pool = TaskPool::builder()
                    .default_limit(LIMIT)
                    .max_tasks(LIMIT)
                    .build();
                app.layer(LimitLayer::new(pool, Header::new("x-client")))
            }
            Contender::LayerThreeGroups => {
                let pool = TaskPool::builder()
                    .default_limit(LIMIT)
                    .max_tasks(LIMIT)
                    .build();
                let classify = Header::new("x-client")
                    .and(Header::new("x-tenant"))
                    .and(PathSegment::new(0));
                app.layer(LimitLayer::new(pool, classify))
            }
        }
    }
}

/// What projects write by hand: a semaphore per key, in a map that only grows.
type Semaphores = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

async fn hand_rolled(
    State(semaphores): State<Semaphores>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = request
        .headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let semaphore = {
        let mut map = semaphores.lock().unwrap();
        Arc::clone(
            map.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(LIMIT))),
        )
    };
    let Ok(_permit) = semaphore.try_acquire_owned() else {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    };
    // Released when the handler returns, not when the body has been sent.
    next.run(request).await
}
