//! The default hasher of group keys.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// The hasher a pool uses for its group keys unless [`Builder::hasher`](crate::Builder::hasher)
/// or [`TaskPool::with_hasher`](crate::TaskPool::with_hasher) choose another.
///
/// Keys often come from the network (peer addresses, tenant names, host names), so the default
/// must resist keys chosen to collide (HashDoS): every `DefaultHashBuilder` is keyed by
/// random values drawn from the operating system once per process and varied per instance, so
/// an attacker who cannot see the hashes cannot predict which keys collide. It is
/// [aHash](https://docs.rs/ahash)'s keyed `RandomState`, which is designed for exactly this and
/// hashes a short key in a fraction of the time of the standard library's SipHash-1-3 (measured
/// in issue #13: a refused `try_spawn` naming 3 `u32` keys went from 825 to about 500
/// instructions). It is not a cryptographic hash, and neither is SipHash-1-3 as `std` uses it;
/// if your threat model needs SipHash, pass `std::hash::RandomState` to `hasher`.
///
/// The type wraps aHash's so that aHash's version is not part of this crate's API.
#[derive(Clone, Default)]
pub struct DefaultHashBuilder(ahash::RandomState);

impl DefaultHashBuilder {
    /// A builder with fresh random keys.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for DefaultHashBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys are secret: never printed.
        f.debug_struct("DefaultHashBuilder").finish_non_exhaustive()
    }
}

impl BuildHasher for DefaultHashBuilder {
    type Hasher = DefaultKeyHasher;

    #[inline]
    fn build_hasher(&self) -> DefaultKeyHasher {
        DefaultKeyHasher(self.0.build_hasher())
    }
}

/// The [`Hasher`] of [`DefaultHashBuilder`].
#[derive(Clone)]
pub struct DefaultKeyHasher(ahash::AHasher);

impl fmt::Debug for DefaultKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultKeyHasher").finish_non_exhaustive()
    }
}

impl Hasher for DefaultKeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0.write_u8(i);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.0.write_u16(i);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.0.write_u32(i);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0.write_u64(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.0.write_u128(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0.write_usize(i);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::DefaultHashBuilder;

    #[test]
    fn instances_are_keyed_differently_and_hash_consistently() {
        let a = DefaultHashBuilder::new();
        let b = DefaultHashBuilder::new();
        // One builder hashes a key the same way every time (the pool relies on it).
        assert_eq!(a.hash_one("peer-1"), a.hash_one("peer-1"));
        assert_eq!(a.clone().hash_one(42u64), a.hash_one(42u64));
        // Two builders are keyed differently: an attacker who learns one pool's collisions
        // has learnt nothing about another's (a chance equality of all 8 is ~2^-512).
        let differ = (0u64..8).any(|k| a.hash_one(k) != b.hash_one(k));
        assert!(differ, "two default hash builders hash alike");
        assert_eq!(format!("{a:?}"), "DefaultHashBuilder { .. }");
    }
}
