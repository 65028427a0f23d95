//! Configuring a pool before it starts.

use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::DefaultHashBuilder;

use crate::TaskPool;
use crate::core::{Config, KeyFmt};

/// Builds a [`TaskPool`] with limits in place before the first task is admitted.
///
/// Created by [`TaskPool::builder`]. Every limit can also be changed later on the pool itself
/// (the hasher and [`log_keys`](Builder::log_keys) cannot).
///
/// # Examples
///
/// A server that runs at most 100 requests in total, at most 4 per peer, and lets one trusted
/// peer run 16:
///
/// ```
/// use taskherd::TaskPool;
///
/// let pool = TaskPool::builder()
///     .max_tasks(100)
///     .default_limit(4)
///     .limit("10.0.0.7", 16)
///     .build();
/// assert_eq!(pool.max_tasks(), Some(100));
/// assert_eq!(pool.effective_limit(&"10.0.0.9"), Some(4));
/// assert_eq!(pool.effective_limit(&"10.0.0.7"), Some(16));
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, S = DefaultHashBuilder> {
    config: Config<K, S>,
}

impl<K> Builder<K> {
    pub(crate) fn new() -> Self {
        Self {
            config: Config {
                hasher: DefaultHashBuilder::new(),
                key_fmt: None,
                max_tasks: None,
                default_limit: None,
                limits: Vec::new(),
            },
        }
    }
}

impl<K, S> Builder<K, S> {
    /// Limits the total number of tasks in the pool (the implicit group every task belongs to).
    ///
    /// `0` admits nothing until it is raised: `try_*` calls are refused, `spawn` and `acquire`
    /// wait. See [`TaskPool::set_max_tasks`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<u32>::builder().max_tasks(8).build();
    /// assert_eq!(pool.max_tasks(), Some(8));
    /// ```
    pub fn max_tasks(mut self, max_tasks: usize) -> Self {
        self.config.max_tasks = Some(max_tasks);
        self
    }

    /// Sets the limit of every named group that has no explicit limit. It never applies to the
    /// total. See [`TaskPool::set_default_limit`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<u32>::builder().default_limit(2).build();
    /// assert_eq!(pool.effective_limit(&7), Some(2));
    /// assert_eq!(pool.max_tasks(), None);
    /// ```
    pub fn default_limit(mut self, limit: usize) -> Self {
        self.config.default_limit = Some(limit);
        self
    }

    /// Sets an explicit limit on one group; a later call for the same key wins.
    /// See [`TaskPool::set_limit`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().limit("db", 1).limit("db", 2).build();
    /// assert_eq!(pool.limit(&"db"), Some(2));
    /// ```
    pub fn limit(mut self, key: K, limit: usize) -> Self {
        self.config.limits.push((key, limit));
        self
    }

    /// Uses `hasher` for group keys instead of the default [`DefaultHashBuilder`].
    ///
    /// The default resists attacker-chosen keys (HashDoS); pick a faster hasher only if keys
    /// cannot be chosen by an adversary.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<u64>::builder()
    ///     .hasher(BuildHasherDefault::<DefaultHasher>::default())
    ///     .default_limit(3)
    ///     .build();
    /// assert_eq!(pool.effective_limit(&1), Some(3));
    /// ```
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, S2> {
        let Config {
            key_fmt,
            max_tasks,
            default_limit,
            limits,
            hasher: _,
        } = self.config;
        Builder {
            config: Config {
                hasher,
                key_fmt,
                max_tasks,
                default_limit,
                limits,
            },
        }
    }
}

impl<K: fmt::Debug, S> Builder<K, S> {
    /// Makes the pool's `tracing` events show group keys with their `Debug` form.
    ///
    /// Off by default, because keys may be any type (not necessarily `Debug`) and may carry data
    /// that should not reach logs, such as peer addresses. Without it, events name a refused
    /// group by its position in the task's list of groups (from 0, repeats left out) and
    /// show a placeholder for other keys. (Errors are separate: the `Debug`
    /// and `Display` of [`TrySpawnError`](crate::TrySpawnError) show the key whenever `K: Debug`,
    /// because the caller chooses whether to log them.)
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().log_keys().limit("tenant-a", 5).build();
    /// assert_eq!(pool.limit(&"tenant-a"), Some(5));
    /// ```
    pub fn log_keys(mut self) -> Self {
        self.config.key_fmt = Some(<K as fmt::Debug>::fmt as KeyFmt<K>);
        self
    }
}

impl<K, S> Builder<K, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Creates the pool.
    ///
    /// # Panics
    ///
    /// Panics if `K`'s `Hash` or `Eq` panics on a key given to [`limit`](Self::limit) (the
    /// explicit limits are entered in the pool's table here); no pool is made.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::<String>::builder().max_tasks(4).build();
    /// assert!(pool.is_empty());
    /// ```
    #[must_use]
    pub fn build(self) -> TaskPool<K, S> {
        TaskPool::from_config(self.config)
    }
}

impl<K, S> fmt::Debug for Builder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("max_tasks", &self.config.max_tasks)
            .field("default_limit", &self.config.default_limit)
            .field("explicit_limits", &self.config.limits.len())
            .field("log_keys", &self.config.key_fmt.is_some())
            .finish_non_exhaustive()
    }
}
