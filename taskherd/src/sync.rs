//! The one lock the core takes, swapped for loom's model under `--cfg taskherd_loom`.

#[cfg(not(taskherd_loom))]
pub(crate) use parking_lot::Mutex;

#[cfg(taskherd_loom)]
pub(crate) use self::loom_mutex::Mutex;

#[cfg(taskherd_loom)]
mod loom_mutex {
    /// loom's mutex with `parking_lot`'s signature: `lock` cannot fail (no poisoning).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
