//! Per-client, per-tenant and total concurrency limits for HTTP and gRPC services: a tower
//! layer for axum, hyper and tonic, admitting requests through a [`taskherd::TaskPool`].
//!
//! [`LimitLayer`] admits each request in the groups a classifier takes from it (client IP,
//! API key, tenant, path segment) plus the pool's total, before calling the inner service:
//!
//! - **refuse** at once (default): `429 Too Many Requests` when one of the request's own groups
//!   is full, `503 Service Unavailable` when the total is, both with `Retry-After`; or
//! - **wait** fairly (first come, first served in each group) for at most a given time, then
//!   refuse; a client that disconnects gives up its place at once (once the server notices,
//!   which hyper does not while a request body waits unread: see [`LimitLayer::wait`]).
//!
//! The admission is held until the response body has been sent to the end or dropped, so a
//! streaming response counts while it streams (and a body answered in one large piece while
//! it goes out: see [`LimitedBody`]). On a pool that can lose an admission before
//! it ends (a fleet's lease that Redis lost, [`Admit::lost`]), the layer stops the request:
//! `503` up to the service's answer, the body ended with [`AdmissionLost`] after. Limits
//! changed on the pool at run time apply to the next request. Refusals are ordinary
//! responses: no `HandleErrorLayer` needed.
//!
//! The layer never sees a connection upgraded to another protocol (a WebSocket): it is
//! counted until its `101` response is sent, not while it lives ([below](#upgraded-connections)).
//!
//! - [`LimitLayer`] / [`LimitService`]: the layer and its service; [`ResponseFuture`] and
//!   [`LimitedBody`]: its response future and the body holding the admission (its error a
//!   [`BoxError`]).
//! - [`Classify`]: which groups a request counts in; ready-made [`PeerIp`] (with trusted
//!   proxies, [`Cidr`], [`ForwardedHeader`]), [`Header`], [`PathSegment`], [`Extension`], combined with
//!   [`ClassifyExt`] ([`And`], [`Or`], [`Optional`], [`MapKey`]). [`Groups`] and
//!   [`Unclassified`] are what a classifier returns.
//! - [`Admit`]: what the layer needs from a pool, implemented for [`taskherd::TaskPool`] and
//!   (feature `redis`) `taskherd_redis::RedisPool`; [`Lost`] is how a pool says an admission
//!   ended before its permit was dropped;
//! - [`HandOff`] and [`Admission`]: a request's admission taken over by its handler (with
//!   [`LimitLayer::hand_off`]), for a connection that outlives the response;
//!   [`Refused`] says why a pool did not admit, [`Refusal`] what the client is told
//!   ([`Refusal::default_response`]: plain HTTP; [`Refusal::grpc_response`]: a gRPC status, for
//!   tonic).
//!
//! # Upgraded connections
//!
//! A request upgraded to another protocol (a WebSocket's `101 Switching Protocols`, an HTTP/2
//! `CONNECT`) counts in its groups until its response has been sent: the body of a `101` is
//! empty, and the connection that lives on after it is served by the handler's own task,
//! which the layer never sees. To count open connections too, build the layer with
//! [`hand_off`](LimitLayer::hand_off) and take the request's admission over in the handler,
//! before it answers ([`HandOff::take`], from the request's extensions): the [`Admission`]
//! keeps the request's slots until it is dropped, so moved into the task that serves the
//! connection, it counts the connection while it lives, and the layer refuses (or queues)
//! the client's next requests meanwhile. The slot passes from the request to the connection
//! with no moment free between them.
//!
//! ```no_run
//! use axum::extract::Request;
//! use axum::response::Response;
//! use axum::routing::get;
//! use http::StatusCode;
//! use taskherd::TaskPool;
//! use taskherd_tower::{HandOff, Header, LimitLayer};
//!
//! async fn websocket(mut request: Request) -> Response {
//!     let admission = request.extensions().get::<HandOff>().and_then(HandOff::take);
//!     let on_upgrade = hyper::upgrade::on(&mut request);
//!     tokio::spawn(async move {
//!         // Released when the connection ends, or when the upgrade fails.
//!         let _admission = admission;
//!         let Ok(upgraded) = on_upgrade.await else { return };
//!         serve_connection(upgraded).await;
//!     });
//!     Response::builder()
//!         .status(StatusCode::SWITCHING_PROTOCOLS)
//!         .header("connection", "upgrade")
//!         .header("upgrade", "websocket")
//!         .body(Default::default())
//!         .unwrap()
//! }
//! # async fn serve_connection(_: hyper::upgrade::Upgraded) {}
//!
//! // At most 2 open connections (and requests in flight) per tenant.
//! let pool = TaskPool::<String>::builder().default_limit(2).build();
//! let app: axum::Router = axum::Router::new()
//!     .route("/ws", get(websocket))
//!     .layer(LimitLayer::new(pool, Header::new("x-tenant")).hand_off());
//! ```
//!
//! Take it only in a handler that answers `101`: a taken admission lasts as long as the
//! [`Admission`] (with hyper, an `on_upgrade` whose response was not a `101` ends only with the
//! connection). With several `hand_off` layers around the handler (a limit per client IP
//! outside a limit per tenant), `take` takes every layer's admission at once.
//!
//! With a fleet's pool, whose admissions can be lost (a lease Redis no longer holds),
//! [`Admission::lost`] resolves when that happens: close the connection then, as the layer
//! stops a response whose admission is lost.
//!
//! Without `hand_off`, a permit taken in the connection's task once the upgrade is done
//! (`pool.acquire(groups)` after `on_upgrade.await`) counts the connection too, but between
//! the `101` and that permit the client's groups have a slot free: a request that arrives then
//! is admitted, and the connection's task waits (`acquire`) or closes the connection
//! (`try_acquire`). Taken in the handler itself, before it answers, such a permit would need
//! a second slot of the request's groups, still held by the request (with a limit of 1,
//! `acquire` would wait for ever, `try_acquire` would be refused).
//!
//! # When not to use it
//!
//! - Limiting the *rate* of requests (per second) rather than how many are in flight: use a
//!   rate limiter such as `tower_governor`.
//! - One global limit that should queue without bound: tower's `ConcurrencyLimitLayer`.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use axum::{Router, routing::get};
//! use taskherd::TaskPool;
//! use taskherd_tower::{ClassifyExt, Header, LimitLayer, PeerIp};
//!
//! # async fn serve() {
//! // At most 4 requests in flight per API key, 256 in all; a request without a key counts
//! // for its client IP. Wait up to half a second for room, then answer 429 or 503.
//! let pool = TaskPool::builder().max_tasks(256).default_limit(4).build();
//! // Keys and addresses in key spaces of their own: a client sending `x-api-key: 192.0.2.1`
//! // must not count in that address's group.
//! let classify = Header::new("x-api-key")
//!     .map_key(|key| format!("key:{key}"))
//!     .or(PeerIp::new().map_key(|ip: std::net::IpAddr| format!("ip:{ip}")));
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(LimitLayer::new(pool, classify).wait(Duration::from_millis(500)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .await
//!     .unwrap();
//! # }
//! ```
//!
//! # Features
//!
//! - `axum` (default): [`PeerIp`] also reads axum's `ConnectInfo<SocketAddr>` extension. Without
//!   it, the crate does not depend on axum and [`PeerIp`] reads a plain [`SocketAddr`](std::net::SocketAddr)
//!   extension only (what a hyper server inserts itself).
//! - `redis`: [`Admit`] for `taskherd_redis::RedisPool`, so that the limits are shared by a
//!   fleet of servers on Redis (a round trip per admission; Redis unreachable is `503`). Off by
//!   default: it brings in the `redis` client.
//! - `tonic`: [`PeerIp`] also reads tonic's `TcpConnectInfo` extension (the peer address a tonic
//!   server inserts). Off by default: it brings in `tonic`.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod admit;
mod body;
mod classify;
mod future;
mod hand_off;
mod layer;
mod response;
mod service;

pub use admit::{Admit, Lost, Refused};
pub use body::{AdmissionLost, BoxError, LimitedBody};
pub use classify::{
    And, Cidr, Classify, ClassifyExt, Extension, ForwardedHeader, Groups, Header, InvalidCidr,
    MapKey, Optional, Or, PathSegment, PeerIp, Unclassified,
};
pub use future::ResponseFuture;
pub use hand_off::{Admission, HandOff};
pub use layer::LimitLayer;
pub use response::Refusal;
pub use service::LimitService;
