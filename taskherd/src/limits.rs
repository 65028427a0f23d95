//! A batch of limit changes, applied as one.

use std::fmt;

/// Several limit changes to apply to a [`TaskPool`](crate::TaskPool) as one, with
/// [`TaskPool::set_limits`](crate::TaskPool::set_limits).
///
/// Changing limits one call at a time lets admissions happen in between, under a combination
/// of limits that was never asked for: raising the default limit from 1 to 10 and then pinning
/// group `g` at 1 lets every waiter of `g` start between the two calls. A batch is applied in
/// one critical section, followed by one hand-out of the room it made, so no admission ever
/// sees half of it.
///
/// Changes are collected by value: each method returns the batch. The same key named twice
/// keeps the last change; the order of different settings does not matter. An empty batch
/// changes nothing.
///
/// # Examples
///
/// Reconfiguring a pool from a new configuration file in one step:
///
/// ```
/// use taskherd::{LimitChanges, TaskPool};
///
/// let pool = TaskPool::builder().max_tasks(4).limit("db", 1).build();
/// let changes = LimitChanges::new()
///     .max_tasks(8)
///     .default_limit(2)
///     .limit("db", 0)
///     .clear_limit("cache");
/// pool.set_limits(changes);
/// assert_eq!(pool.max_tasks(), Some(8));
/// assert_eq!(pool.effective_limit(&"db"), Some(0));
/// assert_eq!(pool.effective_limit(&"web"), Some(2));
/// ```
#[must_use = "a batch of limit changes does nothing until passed to TaskPool::set_limits"]
#[derive(Clone)]
pub struct LimitChanges<K> {
    /// `Some` if the batch changes the total's limit.
    pub(crate) max_tasks: Option<Option<usize>>,
    /// `Some` if the batch changes the default limit.
    pub(crate) default_limit: Option<Option<usize>>,
    /// Explicit limits, in the order given.
    pub(crate) groups: Vec<(K, Option<usize>)>,
}

impl<K> LimitChanges<K> {
    /// An empty batch.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::LimitChanges;
    ///
    /// assert!(LimitChanges::<&str>::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            max_tasks: None,
            default_limit: None,
            groups: Vec::new(),
        }
    }

    /// Sets the limit of the total group ([`TaskPool::set_max_tasks`](crate::TaskPool::set_max_tasks));
    /// `None` removes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::{LimitChanges, TaskPool};
    ///
    /// let pool = TaskPool::<&str>::builder().max_tasks(2).build();
    /// pool.set_limits(LimitChanges::new().max_tasks(None));
    /// assert_eq!(pool.max_tasks(), None);
    /// ```
    pub fn max_tasks(mut self, max_tasks: impl Into<Option<usize>>) -> Self {
        self.max_tasks = Some(max_tasks.into());
        self
    }

    /// Sets the default limit of named groups
    /// ([`TaskPool::set_default_limit`](crate::TaskPool::set_default_limit)); `None` removes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::{LimitChanges, TaskPool};
    ///
    /// let pool = TaskPool::<&str>::new();
    /// pool.set_limits(LimitChanges::new().default_limit(3));
    /// assert_eq!(pool.effective_limit(&"any"), Some(3));
    /// ```
    pub fn default_limit(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.default_limit = Some(limit.into());
        self
    }

    /// Sets the explicit limit of group `key` ([`TaskPool::set_limit`](crate::TaskPool::set_limit));
    /// `None` clears it.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::{LimitChanges, TaskPool};
    ///
    /// let pool = TaskPool::new();
    /// pool.set_limits(LimitChanges::new().limit("db", 2).limit("db", 1));
    /// assert_eq!(pool.limit(&"db"), Some(1), "the last change of a key wins");
    /// ```
    pub fn limit(mut self, key: K, limit: impl Into<Option<usize>>) -> Self {
        self.groups.push((key, limit.into()));
        self
    }

    /// Clears the explicit limit of group `key`
    /// ([`TaskPool::clear_limit`](crate::TaskPool::clear_limit)); the default limit applies again.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::{LimitChanges, TaskPool};
    ///
    /// let pool = TaskPool::builder().default_limit(4).limit("db", 1).build();
    /// pool.set_limits(LimitChanges::new().clear_limit("db"));
    /// assert_eq!(pool.effective_limit(&"db"), Some(4));
    /// ```
    pub fn clear_limit(self, key: K) -> Self {
        self.limit(key, None)
    }

    /// Returns `true` if the batch changes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::LimitChanges;
    ///
    /// assert!(!LimitChanges::new().limit("a", 1).is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.max_tasks.is_none() && self.default_limit.is_none() && self.groups.is_empty()
    }

    /// Takes the batch apart, for pools that apply it somewhere else (such as
    /// `taskherd-redis`): the total's new limit (`None` if unchanged, `Some(None)` to remove
    /// it), the new default limit (same encoding), and the explicit limits in the order given
    /// (a key named twice appears twice; the last one wins).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::LimitChanges;
    ///
    /// let (max_tasks, default_limit, groups) =
    ///     LimitChanges::new().max_tasks(8).limit("db", 1).clear_limit("web").into_parts();
    /// assert_eq!(max_tasks, Some(Some(8)));
    /// assert_eq!(default_limit, None);
    /// assert_eq!(groups, vec![("db", Some(1)), ("web", None)]);
    /// ```
    #[must_use]
    #[allow(clippy::type_complexity)]
    pub fn into_parts(
        self,
    ) -> (
        Option<Option<usize>>,
        Option<Option<usize>>,
        Vec<(K, Option<usize>)>,
    ) {
        (self.max_tasks, self.default_limit, self.groups)
    }
}

impl<K> Default for LimitChanges<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug> fmt::Debug for LimitChanges<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitChanges")
            .field("max_tasks", &self.max_tasks)
            .field("default_limit", &self.default_limit)
            .field("groups", &self.groups)
            .finish()
    }
}
