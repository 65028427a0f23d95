//! [`Admit`] for the fleet's pool, [`RedisPool`] (feature `redis`).

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;

use taskherd::{Group, TryAcquireError};
use taskherd_redis::{RedisKey, RedisPermit, RedisPool};

use crate::{Admit, Groups, Lost, Refused};

/// The boxed future of a [`RedisPool`] admission: its `try_acquire` and `acquire` futures
/// have no name to store, and borrow the pool.
type BoxAdmit<K> = Pin<Box<dyn Future<Output = Result<RedisPermit<K>, Refused<K>>> + Send>>;

/// Limits shared by a fleet of servers: every request is admitted in Redis, in one round trip
/// (shared with the admissions the process makes at the same moment).
///
/// - Refuse mode: [`RedisPool::try_acquire`]. A full group is [`Refused::Group`] (`429`), the
///   full total [`Refused::Total`] (`503`).
/// - Wait mode: [`RedisPool::acquire`], first come first served in each group across the
///   fleet.
/// - Fail closed: Redis unreachable (or a key whose [`RedisKey::segment`] is invalid) and a
///   closed pool are [`Refused::Unavailable`] (`503`): nothing is admitted without Redis. So
///   is a pool whose limits Redis has lost (restarted without persistence): every request
///   gets `503` until some process sets the limits again (see
///   [`UnavailableError::is_forgotten`](taskherd_redis::UnavailableError::is_forgotten)). A
///   pool built with
///   [`restore_limits`](taskherd_redis::RedisPoolBuilder::restore_limits) writes them again
///   by itself, at the first request after the loss (where the pool has none: limits
///   another process wrote back first stay).
///
/// Each admission is a boxed future (one allocation per request, plus a clone of the pool, an
/// `Arc`). Nothing is sent when [`try_admit`](Admit::try_admit) or [`admit`](Admit::admit)
/// returns: the call goes to Redis when the future is first polled, which the layer does in
/// `call` (never in `poll_ready`). The response future then waits for the reply.
///
/// The [`RedisPermit`] moves into the response body and is released (in the background) when
/// the body ends or is dropped. A request whose lease is lost (Redis restarted without
/// persistence, or unreachable for most of a lease) is no longer counted anywhere in the
/// fleet: the layer stops it as the pool aborts its own tasks ([`Admit::lost`]: `503`
/// before the service has answered, the body ended with an error after), unless the pool was
/// built with [`abort_on_lost(false)`](taskherd_redis::RedisPoolBuilder::abort_on_lost), in
/// which case it goes on, uncounted, until it ends.
///
/// # Cancel safety
///
/// Both futures are cancel safe, so the layer's response future is too: dropping one (the
/// client went away, or the maximum wait passed) before it resolves leaves the queues at once
/// and gives back, in the background, any slot its call took or was granted, even if Redis
/// had already admitted it and the reply was still on its way.
///
/// # Examples
///
/// An axum router whose limits are shared by every server that opens the pool `api` on the
/// same Redis:
///
/// ```no_run
/// use std::time::Duration;
///
/// use axum::{Router, routing::get};
/// use taskherd::LimitChanges;
/// use taskherd_redis::RedisPool;
/// use taskherd_tower::{Header, LimitLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool: RedisPool<String> = RedisPool::builder("redis://127.0.0.1:6379/", "api")
///     .lease(Duration::from_secs(15))
///     // 8 requests in flight per tenant, 256 in all: written by the first server, and again
///     // if Redis loses them (an operator's `set_limits` later stays).
///     .restore_limits(LimitChanges::new().max_tasks(256).default_limit(8))
///     .build()
///     .await?;
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(LimitLayer::new(pool, Header::new("x-tenant")).wait(Duration::from_millis(200)));
/// # Ok(()) }
/// ```
impl<K> Admit<K> for RedisPool<K>
where
    K: RedisKey + Eq + Hash + Clone + Send + Sync + 'static,
{
    type Permit = RedisPermit<K>;
    type TryAdmit = BoxAdmit<K>;
    type Admit = BoxAdmit<K>;

    /// [`RedisPool::try_acquire`], boxed; sent to Redis when first polled.
    fn try_admit(&self, groups: Groups<K>) -> Self::TryAdmit {
        let pool = self.clone();
        Box::pin(async move { pool.try_acquire(groups).await.map_err(refused) })
    }

    /// [`RedisPool::acquire`], boxed; sent to Redis when first polled. Closed or unavailable
    /// is [`Refused::Unavailable`].
    fn admit(&self, groups: Groups<K>) -> Self::Admit {
        let pool = self.clone();
        Box::pin(async move {
            pool.acquire(groups)
                .await
                .map_err(|_closed_or_unavailable| Refused::Unavailable)
        })
    }

    /// [`RedisPermit::lost`], if the pool [aborts on lost](RedisPool::aborts_on_lost) (the
    /// default).
    fn lost(&self, permit: &RedisPermit<K>) -> Option<Lost> {
        self.aborts_on_lost()
            .then(|| Box::pin(permit.lost()) as Lost)
    }
}

/// The limit that refused, or [`Refused::Unavailable`] (closed, Redis unreachable, invalid
/// key).
fn refused<K: Clone>(error: TryAcquireError<K>) -> Refused<K> {
    match error.full_group() {
        Some(Group::Total) => Refused::Total,
        Some(Group::Key(key)) => Refused::Group(key.clone()),
        None => Refused::Unavailable,
    }
}
