//! Settings of a [`RedisPool`](crate::RedisPool) before it connects.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use taskherd::LimitChanges;

use crate::engine::{Engine, redact};
use crate::generation::Restore;
use crate::key::InvalidKey;
use crate::scripts::LimitBatch;
use crate::{RedisKey, RedisPool, UnavailableError};

/// The longest lease: deadlines are computed by adding it to the time now, which a lease of
/// `Duration::MAX` would overflow.
const MAX_LEASE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Builds a [`RedisPool`]: made by [`RedisPool::builder`].
#[must_use = "a builder does nothing until build() is awaited"]
pub struct RedisPoolBuilder<K> {
    url: String,
    pool: String,
    lease: Duration,
    abort_on_lost: bool,
    tls: Tls,
    /// See [`restore_limits`](Self::restore_limits) and
    /// [`restore_limits_with`](Self::restore_limits_with); an invalid key fails `build`.
    restore: Option<Result<Restore, InvalidKey>>,
    keys: PhantomData<fn() -> K>,
}

/// Certificates for `rediss://` URLs.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    /// PEM: the certificates the server's must chain to, instead of the system's.
    pub(crate) roots: Option<Vec<u8>>,
    /// PEM: this client's certificate chain and private key.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl<K> RedisPoolBuilder<K> {
    pub(crate) fn new(url: &str, pool: &str) -> Self {
        Self {
            url: url.to_owned(),
            pool: pool.to_owned(),
            lease: Duration::from_secs(15),
            abort_on_lost: true,
            tls: Tls::default(),
            restore: None,
            keys: PhantomData,
        }
    }

    /// How long an admission (or a waiter) stays counted without being renewed; 15 s by
    /// default. Every lease of the process is renewed every `lease / 3`, in one call. A
    /// process that dies gives its slots back within the lease (plus about half a second for
    /// the reaper). A process that cannot get a renewal confirmed presumes its leases lost
    /// after 90% of the lease (fail closed): a longer lease rides out longer outages of
    /// Redis, a shorter one gives slots back sooner. A lease longer than a year (up to
    /// `Duration::MAX`, for "never expires") is cut to a year.
    ///
    /// # Panics
    ///
    /// Panics if `lease` is shorter than 30 ms (renewals every 10 ms would be a poll loop).
    pub fn lease(mut self, lease: Duration) -> Self {
        assert!(
            lease >= Duration::from_millis(30),
            "a lease shorter than 30 ms is not a lease; give it at least seconds"
        );
        self.lease = lease.min(MAX_LEASE);
        self
    }

    /// Whether a spawned task whose lease is lost is aborted (the default) or keeps running
    /// with a `tracing` warning, uncounted. `taskherd-tower`'s layer follows the same setting
    /// for the requests it admits through the pool ([`RedisPool::aborts_on_lost`]).
    pub fn abort_on_lost(mut self, abort: bool) -> Self {
        self.abort_on_lost = abort;
        self
    }

    /// For a `rediss://` URL: the certificates (PEM, one or more) that the server's
    /// certificate must chain to, instead of the system's root certificates (a private
    /// certificate authority, or a self-signed server). Needs the `tls` feature.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use taskherd_redis::RedisPool;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = RedisPool::<String>::builder("rediss://redis.internal:6380/", "api")
    ///     .tls_root_certificates(std::fs::read("/etc/redis/ca.pem")?)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.roots = Some(pem.into());
        self
    }

    /// For a `rediss://` URL: this client's certificate chain and private key (PEM), for a
    /// Redis that authenticates its clients by certificate (`tls-auth-clients`, on by default
    /// once Redis serves TLS). Needs the `tls` feature.
    #[cfg(feature = "tls")]
    pub fn tls_client_certificate(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((certificate_pem.into(), key_pem.into()));
        self
    }

    /// Connects and starts the background tasks (renewal, reaping, releases, wake-ups).
    ///
    /// # Errors
    ///
    /// [`UnavailableError`] if the URL is malformed or Redis cannot be reached, or for a
    /// `rediss://` URL, if this crate was built without the `tls` feature, the certificates
    /// given are not PEM, or the server's certificate is not trusted.
    pub async fn build(self) -> Result<RedisPool<K>, UnavailableError> {
        let restore = self.restore.transpose()?;
        // Connecting waits on the Redis client's tasks, as every call does (see `wakers`).
        let engine = crate::wakers::caught(Engine::start(
            &self.url,
            &self.pool,
            self.lease,
            self.abort_on_lost,
            &self.tls,
            restore,
        ))
        .await?;
        Ok(RedisPool::<K>::from_engine(engine))
    }
}

impl<K: RedisKey> RedisPoolBuilder<K> {
    /// Limits this process writes to the pool whenever they are not there:
    ///
    /// - When it builds the pool, if no limit was ever set in it (or Redis has lost them):
    ///   all of them, as one batch (as [`RedisPool::set_limits`](crate::RedisPool::set_limits)
    ///   writes it). A pool that has limits is left as it is: limits changed at run time by
    ///   any process stay while Redis keeps them (checked in the same script call as the
    ///   write).
    /// - Whenever an admission, or a read of a limit or of statistics, finds that Redis has
    ///   lost the pool's limits since this process saw them (restarted without persistence,
    ///   flushed: see [Redis loses its data](crate#redis-loses-its-data)), whether none are
    ///   there yet or another process has written some since: each of them where the pool
    ///   has none (as [`RedisPool::fill_limits`](crate::RedisPool::fill_limits) writes them),
    ///   before that call goes on. So of processes given different limits here, each writes
    ///   back what the others did not; for a limit several give, the first written after the
    ///   loss stays. A limit another process wrote after the loss is not replaced.
    ///
    /// Without it, admissions fail closed until some process sets limits again, and then go
    /// on under whatever that process wrote.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) fails with [`UnavailableError::is_invalid_key`] if a key's
    /// segment is invalid (only a custom [`RedisKey`] can make one), or as unavailable if the
    /// limits are to be written and Redis cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use taskherd::LimitChanges;
    /// use taskherd_redis::RedisPool;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = RedisPool::<String>::builder("redis://127.0.0.1:6379/", "api")
    ///     .restore_limits(LimitChanges::new().max_tasks(100).default_limit(4))
    ///     .build()
    ///     .await?;
    /// # drop(pool); Ok(()) }
    /// ```
    pub fn restore_limits(mut self, limits: LimitChanges<K>) -> Self {
        self.restore = Some(LimitBatch::of(limits).map(|batch| {
            let batch = std::sync::Arc::new(batch);
            let restore: Restore = std::sync::Arc::new(move || Ok(LimitBatch::clone(&batch)));
            restore
        }));
        self
    }
}

impl<K: RedisKey + Send + Sync + 'static> RedisPoolBuilder<K> {
    /// As [`restore_limits`](Self::restore_limits), with the limits given by `limits`, called
    /// each time they are to be written (when the pool is built, and after each loss of
    /// Redis's data): for a process whose limits change while it runs (`taskherd run
    /// --redis` gives the fleet's limits as it last read them, its own on top).
    ///
    /// `limits` is called on one of the pool's background tasks, or in the call that found
    /// the limits lost: it should return at once (no blocking, no I/O). A panic in it is
    /// caught: the call that needed the limits fails as unavailable.
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) fails as unavailable if the limits are to be written and Redis
    /// cannot be reached. A call that needs the limits (`build` included) fails as
    /// unavailable if one of their keys is invalid (only a custom [`RedisKey`] can make one).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::{Arc, Mutex};
    ///
    /// use taskherd::LimitChanges;
    /// use taskherd_redis::RedisPool;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// // What this process would write back: kept up to date as it changes limits.
    /// let known = Arc::new(Mutex::new(100_usize));
    /// let pool = RedisPool::<String>::builder("redis://127.0.0.1:6379/", "api")
    ///     .restore_limits_with({
    ///         let known = Arc::clone(&known);
    ///         move || LimitChanges::new().max_tasks(*known.lock().unwrap())
    ///     })
    ///     .build()
    ///     .await?;
    /// *known.lock().unwrap() = 200;
    /// pool.set_max_tasks(200).await?;
    /// # Ok(()) }
    /// ```
    pub fn restore_limits_with<F>(mut self, limits: F) -> Self
    where
        F: Fn() -> LimitChanges<K> + Send + Sync + 'static,
    {
        let restore: Restore = std::sync::Arc::new(move || LimitBatch::of(limits()));
        self.restore = Some(Ok(restore));
        self
    }
}

impl<K> fmt::Debug for RedisPoolBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPoolBuilder")
            .field("url", &redact(&self.url))
            .field("pool", &self.pool)
            .field("lease", &self.lease)
            .field("abort_on_lost", &self.abort_on_lost)
            .field("tls_root_certificates", &self.tls.roots.is_some())
            .field("tls_client_certificate", &self.tls.client.is_some())
            .field("restore_limits", &self.restore.is_some())
            .finish()
    }
}
