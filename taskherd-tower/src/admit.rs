//! The small trait the layer admits requests through, and its error.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;

use taskherd::{Group, Permit, TaskPool};

use crate::Groups;

#[cfg(feature = "redis")]
mod redis;

/// A pool that admits requests: what the layer needs from a pool, and nothing more.
///
/// Implemented for the in-process [`TaskPool`] and, with the feature `redis`, for
/// `taskherd_redis::RedisPool`, whose limits are shared by a fleet of servers. A pool whose
/// admission is a round trip to a store returns futures that are not ready at once, and
/// [`Refused::Unavailable`] says that the pool could not decide (its store is unreachable),
/// which the layer answers with `503 Service Unavailable` (fail closed, never admit blindly).
///
/// The permit is held for as long as the request is in flight: until its response body has
/// been sent to the end or dropped. Dropping it must release the admission.
///
/// # Examples
///
/// A pool that admits everything, for a test (a real one would count):
///
/// ```
/// use std::future::{Ready, ready};
/// use taskherd_tower::{Admit, Groups, Refused};
///
/// #[derive(Clone, Debug)]
/// struct Always;
///
/// impl Admit<String> for Always {
///     type Permit = ();
///     type TryAdmit = Ready<Result<(), Refused<String>>>;
///     type Admit = Ready<Result<(), Refused<String>>>;
///     fn try_admit(&self, _groups: Groups<String>) -> Self::TryAdmit { ready(Ok(())) }
///     fn admit(&self, _groups: Groups<String>) -> Self::Admit { ready(Ok(())) }
/// }
/// ```
pub trait Admit<K> {
    /// The admission, released when dropped.
    type Permit: Send + 'static;
    /// The future returned by [`try_admit`](Self::try_admit). `Unpin`, so that the layer can
    /// poll it once in `call` and move it into the response future if it is not ready (box an
    /// `async` block with `Box::pin` to get one).
    type TryAdmit: Future<Output = Result<Self::Permit, Refused<K>>> + Unpin + Send + 'static;
    /// The future returned by [`admit`](Self::admit); `Unpin` for the same reason.
    type Admit: Future<Output = Result<Self::Permit, Refused<K>>> + Unpin + Send + 'static;

    /// Admits a request in `groups` if every one of them and the total has room now, without
    /// queueing. A pool may decide when called (the in-process pool does) or when the future
    /// is polled (a pool that asks a store).
    ///
    /// # Errors
    ///
    /// Resolves to [`Refused`] naming the full limit (the total first, then the groups in
    /// their order), or [`Refused::Unavailable`] if the pool cannot admit at all.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: a dropped future leaves nothing admitted.
    fn try_admit(&self, groups: Groups<K>) -> Self::TryAdmit;

    /// Waits until every one of `groups` and the total has room, first come first served.
    ///
    /// # Errors
    ///
    /// Resolves to [`Refused::Unavailable`] if the pool cannot admit at all (closed, store
    /// unreachable).
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: a dropped future gives up its place in the queues at once, and
    /// whatever was reserved for it goes to the next waiter.
    fn admit(&self, groups: Groups<K>) -> Self::Admit;

    /// For a pool whose admission can end before its permit is dropped (a fleet's lease that
    /// the store lost): a future that resolves once `permit`'s admission has ended, for the
    /// layer to stop the request it admitted, which no limit counts any more. `None` (the
    /// default) for a pool whose permits count until they are dropped, like [`TaskPool`]'s.
    ///
    /// The layer asks once per admitted request (twice with
    /// [`LimitLayer::hand_off`](crate::LimitLayer::hand_off): the second future goes to the
    /// handler's [`Admission`](crate::Admission)), and stops a request whose future resolves. If
    /// it has resolved already when the permit is handed out, the inner service is not called
    /// and the client gets the [`Refusal::Unavailable`](crate::Refusal::Unavailable) response;
    /// from the call up to the moment the inner service has answered, its future (or its answer) is dropped
    /// and the client gets the [`Refusal::Stopped`](crate::Refusal::Stopped) response (`503`,
    /// or gRPC `UNAVAILABLE`); after, the body is dropped at its next poll and the stream ends
    /// with an [`AdmissionLost`](crate::AdmissionLost) error, so that the client sees an
    /// incomplete response, never a short one that looks whole.
    ///
    /// # Cancel safety
    ///
    /// The future must be cancel safe: the layer drops it when the request ends first.
    ///
    /// # Examples
    ///
    /// See [`Lost`].
    fn lost(&self, permit: &Self::Permit) -> Option<Lost> {
        let _ = permit;
        None
    }
}

/// What [`Admit::lost`] returns: resolves once an admission has ended without its permit
/// being dropped.
///
/// # Examples
///
/// A pool whose permits can be revoked from elsewhere (a test's, or a store's):
///
/// ```
/// use std::future::{Ready, ready};
/// use taskherd_tower::{Admit, Groups, Lost, Refused};
/// use tokio::sync::watch;
///
/// #[derive(Clone, Debug)]
/// struct Revocable(watch::Sender<bool>);
///
/// impl Admit<String> for Revocable {
///     type Permit = watch::Receiver<bool>;
///     type TryAdmit = Ready<Result<Self::Permit, Refused<String>>>;
///     type Admit = Ready<Result<Self::Permit, Refused<String>>>;
///     fn try_admit(&self, _groups: Groups<String>) -> Self::TryAdmit {
///         ready(Ok(self.0.subscribe()))
///     }
///     fn admit(&self, _groups: Groups<String>) -> Self::Admit {
///         ready(Ok(self.0.subscribe()))
///     }
///     fn lost(&self, permit: &Self::Permit) -> Option<Lost> {
///         let mut revoked = permit.clone();
///         Some(Box::pin(async move {
///             // A closed channel revokes nothing.
///             if revoked.wait_for(|revoked| *revoked).await.is_err() {
///                 std::future::pending::<()>().await;
///             }
///         }))
///     }
/// }
/// ```
pub type Lost = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why a pool did not admit a request.
///
/// The layer answers [`Group`](Refused::Group) with `429 Too Many Requests` (the client's own
/// limit), [`Total`](Refused::Total) and [`Unavailable`](Refused::Unavailable) with
/// `503 Service Unavailable` (the server's). See [`Refusal`](crate::Refusal).
///
/// # Examples
///
/// ```
/// use taskherd::TaskPool;
/// use taskherd_tower::{Admit, Groups, Refused};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::builder().limit("tenant-1", 0).build();
/// let refused = pool.try_admit(Groups::one("tenant-1")).await.unwrap_err();
/// assert_eq!(refused, Refused::Group("tenant-1"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refused<K> {
    /// The total limit is reached.
    Total,
    /// This group of the request is full.
    Group(K),
    /// The pool cannot admit anything now: it is closed, or its store cannot be reached.
    Unavailable,
}

impl<K: fmt::Debug> fmt::Display for Refused<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Total => f.write_str("the total limit is reached"),
            Refused::Group(key) => write!(f, "group {key:?} is full"),
            Refused::Unavailable => f.write_str("the pool is unavailable"),
        }
    }
}

impl<K: fmt::Debug> std::error::Error for Refused<K> {}

/// The boxed waiting future of a [`TaskPool`]: its `acquire` future has no name to store.
type BoxAcquire<K, S> = Pin<Box<dyn Future<Output = Result<Permit<K, S>, Refused<K>>> + Send>>;

impl<K, S> Admit<K> for TaskPool<K, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Permit = Permit<K, S>;
    type TryAdmit = Ready<Result<Permit<K, S>, Refused<K>>>;
    type Admit = BoxAcquire<K, S>;

    /// Takes a permit with [`TaskPool::try_acquire`] at once, when called (so the layer
    /// admits in `call`); the returned future is already resolved. No allocation.
    fn try_admit(&self, groups: Groups<K>) -> Self::TryAdmit {
        ready(self.try_acquire(groups).map_err(|error| {
            match error.full_group() {
                Some(Group::Total) => Refused::Total,
                Some(Group::Key(key)) => Refused::Group(key.clone()),
                None => Refused::Unavailable, // closed
            }
        }))
    }

    /// Waits with [`TaskPool::acquire`] (cancel safe), boxed: one allocation per request in
    /// wait mode. A closed pool is [`Refused::Unavailable`].
    fn admit(&self, groups: Groups<K>) -> Self::Admit {
        let acquire = self.acquire(groups);
        Box::pin(async move { acquire.await.map_err(|_closed| Refused::Unavailable) })
    }
}
