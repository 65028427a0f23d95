//! The layer: settings shared by every service it makes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tower_layer::Layer;

use crate::response::Config;
use crate::{LimitService, Refusal};

/// A tower [`Layer`] admitting each request through a pool, in the groups a classifier takes
/// from the request, before calling the inner service; see [`LimitService`] for what happens
/// to a request.
///
/// Built with a pool (a [`TaskPool`](taskherd::TaskPool), or any [`Admit`](crate::Admit)) and a
/// classifier ([`Classify`](crate::Classify)). Refuses at once by default; [`wait`](Self::wait)
/// queues instead. The pool is shared, not copied: limits changed on it at run time
/// ([`TaskPool::set_limit`](taskherd::TaskPool::set_limit)) apply from the next request, and
/// its statistics count every request it admits or refuses (not one answered `400` as
/// [`Unclassified`](crate::Unclassified), which never reaches the pool). With a fleet's
/// `taskherd_redis::RedisPool` in wait mode, a request whose wait ends while its admission's
/// round trip is still under way (Redis slower than the wait) can be counted twice: Redis
/// counted the grant it then gives back, and the last try counts again.
///
/// # Compared with tower's `ConcurrencyLimitLayer`
///
/// tower's layer takes its permit in `poll_ready`, before the request exists, so it has one
/// global limit, and it queues (a server cannot shed load with it). This layer admits in
/// `call` with the request in hand: per-client, per-tenant and total limits at once, refused
/// with `429`/`503` or queued fairly for a bounded time, held until the response body is done.
///
/// # Examples
///
/// An axum router, at most 2 requests in flight per client IP and 100 in all:
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{Router, routing::get};
/// use taskherd::TaskPool;
/// use taskherd_tower::{LimitLayer, PeerIp};
///
/// # async fn serve() {
/// let pool = TaskPool::builder().max_tasks(100).default_limit(2).build();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(LimitLayer::new(pool, PeerIp::new()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
///     .await
///     .unwrap();
/// # }
/// ```
pub struct LimitLayer<A, C> {
    pool: A,
    classify: Arc<C>,
    config: Arc<Config>,
}

impl<A, C> LimitLayer<A, C> {
    /// A layer admitting requests through `pool`, in the groups `classify` names; refusing at
    /// once when a limit is reached, with `Retry-After: 1`.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{Header, LimitLayer};
    ///
    /// let _per_tenant = LimitLayer::new(TaskPool::<String>::builder().default_limit(4).build(), Header::new("x-tenant"));
    /// ```
    #[must_use]
    pub fn new(pool: A, classify: C) -> Self {
        Self {
            pool,
            classify: Arc::new(classify),
            config: Arc::new(Config::new()),
        }
    }

    /// Queues requests that find no room, first come first served in each group, for at most
    /// `max`; then the request gets the refusal response.
    ///
    /// When `max` has passed, the request gives up its place and tries once more without
    /// waiting: if it still finds no room, the limit that refuses it decides the response
    /// (`429` for one of its groups, `503` for the total), as in refuse mode; if room appeared
    /// at that moment, it is served. That try is answered at once by an in-process pool, and
    /// in one round trip by a fleet's pool on Redis; if the store has not answered within
    /// [`last_try`](Self::last_try) (100 ms by default: stalled, or unreachable), the request
    /// gets the `Unavailable` response (`503`), so the answer comes at most that long after
    /// `max`.
    ///
    /// A request whose client disconnects while it waits gives up its place at once, if the
    /// server notices. hyper notices only while it is reading the connection: for a request
    /// without a body, or whose body it has already taken in whole (a fixed-length body small
    /// enough to arrive with the headers: 16 KB did, 64 KB did not, in tests over loopback).
    /// While a body waits unread (a chunked body, or a larger one, even one the client sent
    /// to the end before it left), hyper does not notice: the request keeps its place until
    /// `max`, and if a slot frees first it is admitted and the inner service is called for a
    /// client that has gone (hyper drops the call once it finds the connection closed). A layer
    /// outside this one that reads the body to the end first (holding it in memory) makes
    /// such requests noticed, at that cost.
    ///
    /// # Panics
    ///
    /// A request that finds no room at once needs a timer: the service's `call` panics if it
    /// runs outside a tokio runtime with the time driver enabled (servers run inside one).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    ///
    /// let _patient = LimitLayer::new(TaskPool::<std::net::IpAddr>::new(), PeerIp::new()).wait(Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn wait(mut self, max: Duration) -> Self {
        Arc::make_mut(&mut self.config).wait = Some(max);
        self
    }

    /// How long the try after the maximum [`wait`](Self::wait) may take before the request
    /// gets the `Unavailable` response (`503`); 100 ms by default. An in-process pool answers
    /// at once; a fleet's pool needs a round trip to Redis, after the admission call already
    /// in flight: raise it for a Redis far away (more than about 50 ms), or timed-out requests
    /// get `503` rather than the `429` naming their full group.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    ///
    /// let _far = LimitLayer::new(TaskPool::<std::net::IpAddr>::new(), PeerIp::new())
    ///     .wait(Duration::from_secs(2))
    ///     .last_try(Duration::from_millis(300));
    /// ```
    #[must_use]
    pub fn last_try(mut self, within: Duration) -> Self {
        Arc::make_mut(&mut self.config).last_try = within;
        self
    }

    /// Lets handlers take their request's admission over, so that it outlives the response:
    /// each admitted request carries a [`HandOff`](crate::HandOff) in its extensions, whose
    /// [`take`](crate::HandOff::take) hands the handler an [`Admission`](crate::Admission)
    /// that keeps the request's slots until it is dropped. For the connection a WebSocket's
    /// `101 Switching Protocols` opens, which the layer never sees (see
    /// [Upgraded connections](crate#upgraded-connections)): taken before the handler answers,
    /// the slot passes from the request to the connection with no moment free between them.
    ///
    /// A handler that does not take it changes nothing: the layer releases the admission when
    /// the response is done, as without this. Off by default: it costs each admitted request
    /// two allocations (the place both sides share, and the permit moved there), and a second
    /// [`Admit::lost`](crate::Admit::lost) future with a pool whose admissions can be lost.
    ///
    /// Several layers built with `hand_off` around one handler lend it their admissions
    /// together: one [`HandOff`](crate::HandOff) in the request takes them all.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    ///
    /// // At most 4 open WebSockets (and requests in flight) per client IP.
    /// let _layer = LimitLayer::new(TaskPool::<std::net::IpAddr>::builder().default_limit(4).build(), PeerIp::new())
    ///     .hand_off();
    /// ```
    ///
    /// The handler's side is in [`HandOff`](crate::HandOff).
    #[must_use]
    pub fn hand_off(mut self) -> Self {
        Arc::make_mut(&mut self.config).hand_off = true;
        self
    }

    /// Sets the `Retry-After` seconds of the default refusal responses (default 1).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    ///
    /// let _layer = LimitLayer::new(TaskPool::<std::net::IpAddr>::new(), PeerIp::new()).retry_after(5);
    /// ```
    #[must_use]
    pub fn retry_after(mut self, seconds: u32) -> Self {
        Arc::make_mut(&mut self.config).retry_after = seconds;
        self
    }

    /// Answers refusals with `respond` instead of the default responses
    /// ([`Refusal::default_response`]), e.g. in JSON. The response should name no group or key:
    /// it goes to the client.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp, Refusal};
    ///
    /// let _json = LimitLayer::new(TaskPool::<std::net::IpAddr>::new(), PeerIp::new()).refusal_response(|refusal: Refusal| {
    ///     let mut response = refusal.default_response(1);
    ///     *response.body_mut() = r#"{"error":"busy"}"#.into();
    ///     response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    ///     response
    /// });
    /// ```
    #[must_use]
    pub fn refusal_response<F>(mut self, respond: F) -> Self
    where
        F: Fn(Refusal) -> Response<Bytes> + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.config).respond = Some(Arc::new(respond));
        self
    }

    /// The pool requests are admitted through.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    /// use taskherd_tower::{LimitLayer, PeerIp};
    ///
    /// let layer = LimitLayer::new(TaskPool::<std::net::IpAddr>::builder().max_tasks(8).build(), PeerIp::new());
    /// assert_eq!(layer.pool().max_tasks(), Some(8));
    /// ```
    #[must_use]
    pub fn pool(&self) -> &A {
        &self.pool
    }
}

impl<S, A: Clone, C> Layer<S> for LimitLayer<A, C> {
    type Service = LimitService<S, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitService::new(
            inner,
            self.pool.clone(),
            Arc::clone(&self.classify),
            Arc::clone(&self.config),
        )
    }
}

impl<A: Clone, C> Clone for LimitLayer<A, C> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            classify: Arc::clone(&self.classify),
            config: Arc::clone(&self.config),
        }
    }
}

impl<A: fmt::Debug, C> fmt::Debug for LimitLayer<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitLayer")
            .field("pool", &self.pool)
            .field("classify", &std::any::type_name::<C>())
            .field("config", &self.config)
            .finish()
    }
}
