//! The one lock the core takes, swapped for loom's model under `--cfg taskherd_loom`, or for
//! a timed one under `--cfg taskherd_lock_hold`.

#[cfg(not(any(taskherd_loom, taskherd_lock_hold)))]
pub(crate) use parking_lot::Mutex;

#[cfg(taskherd_loom)]
pub(crate) use self::loom_mutex::Mutex;

#[cfg(all(taskherd_lock_hold, not(taskherd_loom)))]
pub(crate) use self::timed::Mutex;

/// Counts the pool's closings, read outside the lock (loom's own under `--cfg taskherd_loom`).
#[cfg(not(taskherd_loom))]
pub(crate) use std::sync::atomic::AtomicU64;

#[cfg(taskherd_loom)]
pub(crate) use loom::sync::atomic::AtomicU64;

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

/// How long each critical section holds the lock, for `examples/lock_hold.rs` (issue #13,
/// "Beyond this machine"). Built only with `RUSTFLAGS="--cfg taskherd_lock_hold"`; a normal
/// build has none of it.
///
/// Every `lock()` remembers where it was called from (`#[track_caller]`), reads the CPU's
/// time-stamp counter once the lock is taken and again just before it is released, and
/// appends `(call site, ticks)` to a log of the calling thread, after unlocking. The example
/// converts ticks to nanoseconds and subtracts what the two reads cost ([`empty_section`]).
#[cfg(taskherd_lock_hold)]
#[doc(hidden)]
pub mod lock_hold {
    use std::cell::RefCell;
    use std::panic::Location;

    thread_local! {
        static LOG: RefCell<Vec<(&'static Location<'static>, u64)>> =
            const { RefCell::new(Vec::new()) };
    }

    /// The time-stamp counter (x86_64), else nanoseconds since the first call.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub fn ticks() -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `rdtsc` reads a counter; it has no preconditions on x86_64.
            unsafe { core::arch::x86_64::_rdtsc() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_nanos() as u64
        }
    }

    pub(crate) fn record(site: &'static Location<'static>, ticks: u64) {
        LOG.with(|log| log.borrow_mut().push((site, ticks)));
    }

    /// Takes this thread's log: one `(call site of lock(), ticks held)` per critical section.
    pub fn take() -> Vec<(&'static Location<'static>, u64)> {
        LOG.with(|log| std::mem::take(&mut *log.borrow_mut()))
    }

    /// Ticks an empty critical section of the same timed mutex holds, averaged like
    /// [`typical`] over `n`: the cost of the measurement itself, to subtract.
    pub fn empty_section(n: usize) -> f64 {
        let lock = super::timed::Mutex::new(0u64);
        let _ = take();
        for _ in 0..n {
            *lock.lock() += 1;
        }
        let mut held: Vec<u64> = take().into_iter().map(|(_, ticks)| ticks).collect();
        typical(&mut held)
    }

    /// The mean of the fastest 99% of `held` (sorted here): a section interrupted by the
    /// machine's other work does not move it much, and unlike a median it is not stuck on the
    /// counter's steps (which are coarse on some virtual machines).
    pub fn typical(held: &mut [u64]) -> f64 {
        held.sort_unstable();
        let kept = &held[..held.len() - held.len() / 100];
        if kept.is_empty() {
            return 0.0;
        }
        kept.iter().map(|&t| t as f64).sum::<f64>() / kept.len() as f64
    }
}

#[cfg(taskherd_lock_hold)]
mod timed {
    use std::ops::{Deref, DerefMut};
    use std::panic::Location;

    use super::lock_hold::{record, ticks};

    /// `parking_lot::Mutex`, timing each critical section.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) struct Guard<'a, T> {
        guard: Option<parking_lot::MutexGuard<'a, T>>,
        site: &'static Location<'static>,
        taken: u64,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        #[track_caller]
        pub(crate) fn lock(&self) -> Guard<'_, T> {
            let site = Location::caller();
            let guard = self.0.lock();
            Guard {
                guard: Some(guard),
                site,
                taken: ticks(),
            }
        }
    }

    impl<T> Deref for Guard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            self.guard.as_deref().expect("held until dropped")
        }
    }

    impl<T> DerefMut for Guard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_deref_mut().expect("held until dropped")
        }
    }

    impl<T> Drop for Guard<'_, T> {
        fn drop(&mut self) {
            let released = ticks();
            drop(self.guard.take());
            record(self.site, released.wrapping_sub(self.taken));
        }
    }
}
