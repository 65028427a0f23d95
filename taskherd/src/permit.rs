//! Permits: admissions held by the caller instead of a spawned task.

use std::fmt;

use crate::DefaultHashBuilder;
use crate::core::Admission;

/// An admission held by the caller: counted in its groups and the total exactly like a running
/// task, until it is dropped.
///
/// Use a permit for work that is not a spawned task, such as a request handled inline in a
/// server's connection loop. Permits and tasks share the same counts and limits. Obtained from
/// [`TaskPool::try_acquire`](crate::TaskPool::try_acquire) or
/// [`TaskPool::acquire`](crate::TaskPool::acquire).
///
/// Dropping the permit releases its slots and hands them at once to the oldest waiters. The
/// drop runs `K`'s `Drop` for the key of a group it leaves empty, after unlocking; if that
/// panics, the panic comes out of the permit's drop, with the slots released and the waiters
/// granted and woken all the same (see [Keys that panic](crate::TaskPool#keys-that-panic)).
///
/// # Examples
///
/// ```
/// use taskherd::TaskPool;
///
/// let pool = TaskPool::builder().limit("db", 1).build();
/// {
///     let permit = pool.try_acquire(["db"]).unwrap();
///     assert_eq!(pool.task_count(&"db"), 1);
///     assert_eq!(permit.groups().collect::<Vec<_>>(), [&"db"]);
/// }
/// assert_eq!(pool.task_count(&"db"), 0);
/// ```
#[must_use = "the permit is released as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct Permit<K: Eq, S = DefaultHashBuilder> {
    admission: Admission<K, S>,
}

impl<K: Eq, S> Permit<K, S> {
    pub(crate) fn new(admission: Admission<K, S>) -> Self {
        Self { admission }
    }

    /// The groups this permit counts in, in the order they were named (duplicates removed;
    /// the total group is implicit).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskherd::TaskPool;
    ///
    /// let pool = TaskPool::new();
    /// let permit = pool.try_acquire(["a", "b", "a"]).unwrap();
    /// assert_eq!(permit.groups().copied().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &K> {
        self.admission.groups()
    }
}

impl<K: Eq + fmt::Debug, S> fmt::Debug for Permit<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("groups", &self.groups().collect::<Vec<_>>())
            .finish()
    }
}
