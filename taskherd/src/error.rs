//! Errors returned when the pool refuses work.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Which limit refused an admission.
///
/// The total group (every task's implicit group, limited by
/// [`max_tasks`](crate::TaskPool::max_tasks)) is checked first, then the caller's groups in the
/// order the caller named them; the first one that is full is reported.
///
/// # Examples
///
/// ```
/// use taskherd::{Group, TaskPool};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::builder().max_tasks(1).build();
/// let _running = pool.try_spawn(["a"], std::future::pending::<()>()).unwrap();
/// let err = pool.try_spawn(["b"], async {}).unwrap_err();
/// assert_eq!(err.full_group(), Some(&Group::Total));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group<K> {
    /// The implicit group every task belongs to, limited by `max_tasks`.
    Total,
    /// A group the caller named.
    Key(K),
}

impl<K> Group<K> {
    /// Returns the key of a named group, or `None` for [`Group::Total`].
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::Group;
    ///
    /// assert_eq!(Group::Key("peer-1").key(), Some(&"peer-1"));
    /// assert_eq!(Group::<&str>::Total.key(), None);
    /// ```
    #[must_use]
    pub fn key(&self) -> Option<&K> {
        match self {
            Group::Total => None,
            Group::Key(key) => Some(key),
        }
    }
}

impl<K: fmt::Debug> fmt::Display for Group<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Total => f.write_str("the total group"),
            Group::Key(key) => write!(f, "group {key:?}"),
        }
    }
}

/// Why the pool refused an admission.
#[derive(Clone)]
pub(crate) enum Refusal<K> {
    /// This group had no room.
    Full(Group<K>),
    /// The pool was closed.
    Closed,
    /// The pool could not decide: the store it keeps its counts in (a pool shared by a fleet)
    /// could not be reached. Never made by [`TaskPool`](crate::TaskPool).
    Unavailable(Source),
}

/// Why a pool was unavailable, shared by clones of the error.
pub(crate) type Source = Arc<dyn Error + Send + Sync + 'static>;

impl<K> Refusal<K> {
    fn full_group(&self) -> Option<&Group<K>> {
        match self {
            Refusal::Full(group) => Some(group),
            Refusal::Closed | Refusal::Unavailable(_) => None,
        }
    }

    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Refusal::Unavailable(source) => Some(&**source),
            Refusal::Full(_) | Refusal::Closed => None,
        }
    }

    fn debug_name(&self) -> &'static str {
        match self {
            Refusal::Full(_) => "Full",
            Refusal::Closed => "Closed",
            Refusal::Unavailable(_) => "Unavailable",
        }
    }
}

/// Two unavailable refusals are equal whatever their sources (which need not be comparable).
impl<K: PartialEq> PartialEq for Refusal<K> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Refusal::Full(a), Refusal::Full(b)) => a == b,
            (Refusal::Closed, Refusal::Closed) => true,
            (Refusal::Unavailable(_), Refusal::Unavailable(_)) => true,
            _ => false,
        }
    }
}

impl<K: Eq> Eq for Refusal<K> {}

impl<K: fmt::Debug> fmt::Display for Refusal<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Full(group) => write!(f, "{group} is full"),
            Refusal::Closed => f.write_str("the pool is closed"),
            Refusal::Unavailable(source) => write!(f, "the pool is unavailable: {source}"),
        }
    }
}

/// The error returned by [`TaskPool::try_spawn`](crate::TaskPool::try_spawn) and
/// [`TaskPool::try_spawn_with`](crate::TaskPool::try_spawn_with) when the task is refused.
///
/// The refused input (the future, or the closure that would have made it) is handed back by
/// [`into_inner`](Self::into_inner) untouched: a refused future has never been polled and a refused
/// closure has never been called, so the caller loses nothing and can retry, queue or answer
/// "busy" with it.
///
/// # Examples
///
/// Shedding load and getting the request back:
///
/// ```
/// use taskherd::TaskPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::builder().limit("peer-1", 0).build();
/// let request = String::from("GET /");
/// let err = pool.try_spawn(["peer-1"], async move { request.len() }).unwrap_err();
/// assert!(err.is_full());
/// assert!(!err.is_closed());
/// let future = err.into_inner(); // never polled: we can run it elsewhere
/// assert_eq!(future.await, 5);
/// # }
/// ```
pub struct TrySpawnError<K, T> {
    refusal: Refusal<K>,
    inner: T,
}

impl<K, T> TrySpawnError<K, T> {
    pub(crate) fn new(refusal: Refusal<K>, inner: T) -> Self {
        Self { refusal, inner }
    }

    /// Returns the refused future (or closure), untouched.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().max_tasks(0).build();
    /// let err = pool.try_spawn(["a"], async { 7 }).unwrap_err();
    /// assert_eq!(err.into_inner().await, 7);
    /// # }
    /// ```
    #[must_use]
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Returns `true` if the task was refused because a group (or the total) had no room.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().limit("a", 0).build();
    /// assert!(pool.try_spawn(["a"], async {}).unwrap_err().is_full());
    /// # }
    /// ```
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.refusal.full_group().is_some()
    }

    /// Returns `true` if the task was refused because the pool is
    /// [closed](crate::TaskPool::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().limit("a", 0).build();
    /// assert!(!pool.try_spawn(["a"], async {}).unwrap_err().is_closed());
    /// pool.close();
    /// let err = pool.try_spawn(["b"], async {}).unwrap_err();
    /// assert!(err.is_closed() && !err.is_full() && err.full_group().is_none());
    /// # }
    /// ```
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.refusal, Refusal::Closed)
    }

    /// Returns `true` if the pool could not decide because the store it keeps its counts in
    /// could not be reached: a pool shared by a fleet (`taskherd-redis`) fails closed, and
    /// says so with this instead of "full". Never the case for a [`TaskPool`](crate::TaskPool).
    /// [`Error::source`] gives the store's error.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self.refusal, Refusal::Unavailable(_))
    }

    /// Returns the group whose limit refused the task, or `None` if it was not refused for
    /// lack of room.
    ///
    /// The total group is reported first, then the caller's groups in the caller's order: the
    /// first full one wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::{Group, TaskPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = TaskPool::builder().limit("b", 0).limit("c", 0).build();
    /// let err = pool.try_spawn(["a", "c", "b"], async {}).unwrap_err();
    /// assert_eq!(err.full_group(), Some(&Group::Key("c")));
    /// # }
    /// ```
    #[must_use]
    pub fn full_group(&self) -> Option<&Group<K>> {
        self.refusal.full_group()
    }
}

impl<K: fmt::Debug, T> fmt::Debug for TrySpawnError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_refusal(&self.refusal, f)
    }
}

/// `Full(Key("db"), ..)`, `Closed(..)` or `Unavailable(<source>, ..)`.
fn debug_refusal<K: fmt::Debug>(refusal: &Refusal<K>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut tuple = f.debug_tuple(refusal.debug_name());
    match refusal {
        Refusal::Full(group) => tuple.field(group),
        Refusal::Closed => &mut tuple,
        Refusal::Unavailable(source) => tuple.field(&format_args!("{source}")),
    };
    tuple.finish_non_exhaustive()
}

impl<K: fmt::Debug, T> fmt::Display for TrySpawnError<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task refused: {}", self.refusal)
    }
}

impl<K: fmt::Debug, T> Error for TrySpawnError<K, T> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.refusal.source()
    }
}

/// The error returned by [`TaskPool::try_acquire`](crate::TaskPool::try_acquire) when no permit
/// is available now.
///
/// # Examples
///
/// ```
/// use taskherd::{Group, TaskPool};
///
/// let pool = TaskPool::builder().limit("db", 1).build();
/// let _held = pool.try_acquire(["db"]).unwrap();
/// let err = pool.try_acquire(["db"]).unwrap_err();
/// assert!(err.is_full());
/// assert_eq!(err.full_group(), Some(&Group::Key("db")));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TryAcquireError<K> {
    refusal: Refusal<K>,
}

impl<K> TryAcquireError<K> {
    pub(crate) fn new(refusal: Refusal<K>) -> Self {
        Self { refusal }
    }

    /// Returns `true` if a group (or the total) had no room, or had waiters ahead.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().max_tasks(0).build();
    /// assert!(pool.try_acquire(["a"]).unwrap_err().is_full());
    /// ```
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.refusal.full_group().is_some()
    }

    /// Returns `true` if the pool is [closed](crate::TaskPool::close).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::builder().max_tasks(0).build();
    /// assert!(!pool.try_acquire(["a"]).unwrap_err().is_closed());
    /// pool.close();
    /// assert!(pool.try_acquire(["a"]).unwrap_err().is_closed());
    /// ```
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.refusal, Refusal::Closed)
    }

    /// Returns `true` if the pool could not decide because the store it keeps its counts in
    /// could not be reached: a pool shared by a fleet (`taskherd-redis`) fails closed, and
    /// says so with this instead of "full". Never the case for a [`TaskPool`](crate::TaskPool).
    /// [`Error::source`] gives the store's error.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self.refusal, Refusal::Unavailable(_))
    }

    /// Returns the group that refused: the total first, then the caller's groups in the
    /// caller's order. `None` if the refusal was not for lack of room.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::{Group, TaskPool};
    ///
    /// let pool = TaskPool::builder().limit("b", 0).build();
    /// let err = pool.try_acquire(["a", "b"]).unwrap_err();
    /// assert_eq!(err.full_group(), Some(&Group::Key("b")));
    /// ```
    #[must_use]
    pub fn full_group(&self) -> Option<&Group<K>> {
        self.refusal.full_group()
    }
}

impl<K: fmt::Debug> fmt::Debug for TryAcquireError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.refusal {
            Refusal::Full(group) => f.debug_tuple("Full").field(group).finish(),
            Refusal::Closed => f.write_str("Closed"),
            Refusal::Unavailable(source) => f
                .debug_tuple("Unavailable")
                .field(&format_args!("{source}"))
                .finish(),
        }
    }
}

impl<K: fmt::Debug> fmt::Display for TryAcquireError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no permit: {}", self.refusal)
    }
}

impl<K: fmt::Debug> Error for TryAcquireError<K> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.refusal.source()
    }
}

/// The error returned by [`TaskPool::spawn`](crate::TaskPool::spawn): the pool was closed before
/// the task was admitted (or, for a pool shared by a fleet, its store could not be reached:
/// [`is_unavailable`](Self::is_unavailable)). The future is handed back, never polled.
///
/// # Examples
///
/// ```
/// use taskherd::TaskPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::<&str>::new();
/// pool.close();
/// let err = pool.spawn(["a"], async { 42 }).await.unwrap_err();
/// assert!(err.is_closed() && !err.is_unavailable());
/// assert_eq!(err.into_inner().await, 42);
/// # }
/// ```
pub struct SpawnError<F> {
    inner: F,
    unavailable: Option<Source>,
}

impl<F> SpawnError<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner,
            unavailable: None,
        }
    }

    pub(crate) fn unavailable(source: Source, inner: F) -> Self {
        Self {
            inner,
            unavailable: Some(source),
        }
    }

    /// Returns the future that was not spawned, never polled.
    #[must_use]
    pub fn into_inner(self) -> F {
        self.inner
    }

    /// Returns `true` if the pool was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.unavailable.is_none()
    }

    /// Returns `true` if the pool's store could not be reached (a pool shared by a fleet);
    /// never for a [`TaskPool`](crate::TaskPool). [`Error::source`] gives the store's error.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        self.unavailable.is_some()
    }
}

impl<F> fmt::Debug for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("SpawnError");
        if let Some(source) = &self.unavailable {
            debug.field("unavailable", &format_args!("{source}"));
        }
        debug.finish_non_exhaustive()
    }
}

impl<F> fmt::Display for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unavailable {
            None => f.write_str("task not spawned: the pool is closed"),
            Some(source) => write!(f, "task not spawned: the pool is unavailable: {source}"),
        }
    }
}

impl<F> Error for SpawnError<F> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.unavailable
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

/// The error returned by [`TaskPool::acquire`](crate::TaskPool::acquire): the pool was closed
/// before a permit was granted (or, for a pool shared by a fleet, its store could not be
/// reached: [`is_unavailable`](Self::is_unavailable)).
///
/// # Examples
///
/// ```
/// use taskherd::TaskPool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = TaskPool::<&str>::new();
/// pool.close();
/// let err = pool.acquire(["a"]).await.unwrap_err();
/// assert!(err.is_closed());
/// # }
/// ```
#[derive(Clone)]
pub struct AcquireError {
    unavailable: Option<Source>,
}

impl AcquireError {
    pub(crate) fn closed() -> Self {
        Self { unavailable: None }
    }

    pub(crate) fn unavailable(source: Source) -> Self {
        Self {
            unavailable: Some(source),
        }
    }

    /// Returns `true` if the pool was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.unavailable.is_none()
    }

    /// Returns `true` if the pool's store could not be reached (a pool shared by a fleet);
    /// never for a [`TaskPool`](crate::TaskPool). [`Error::source`] gives the store's error.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        self.unavailable.is_some()
    }
}

/// Two errors are equal if both are "closed" or both "unavailable", whatever the sources.
impl PartialEq for AcquireError {
    fn eq(&self, other: &Self) -> bool {
        self.is_closed() == other.is_closed()
    }
}

impl Eq for AcquireError {}

impl fmt::Debug for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unavailable {
            None => f.write_str("AcquireError(Closed)"),
            Some(source) => write!(f, "AcquireError(Unavailable({source}))"),
        }
    }
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unavailable {
            None => f.write_str("no permit: the pool is closed"),
            Some(source) => write!(f, "no permit: the pool is unavailable: {source}"),
        }
    }
}

impl Error for AcquireError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.unavailable
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}
