//! The set of groups one admission names: hashed once, deduplicated, in the caller's order.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use smallvec::SmallVec;

/// How many groups an admission can name before its set spills to the heap.
const INLINE_GROUPS: usize = 4;

/// Above this many groups, duplicates are found with a hash table instead of pairwise.
const PAIRWISE_DEDUP_MAX: usize = 16;

/// The deduplicated groups of one admission, each with its hash.
///
/// Hashes are computed here, outside the pool's lock, and reused for every lookup the
/// admission and its release make. The caller's order is kept (first occurrence wins) because
/// refusals report the first full group in that order.
pub(crate) struct GroupSet<K> {
    items: SmallVec<[(u64, K); INLINE_GROUPS]>,
}

impl<K: Eq + Hash> GroupSet<K> {
    /// Hashes and deduplicates `groups`.
    ///
    /// Cost is O(n) for n groups (pairwise comparison for small n, where it is cheaper than a
    /// table). Allocates only when more than [`INLINE_GROUPS`] distinct groups are named.
    pub(crate) fn new<S: BuildHasher>(groups: impl IntoIterator<Item = K>, hasher: &S) -> Self {
        let mut items: SmallVec<[(u64, K); INLINE_GROUPS]> = SmallVec::new();
        let mut seen: Option<HashTable<usize>> = None;
        for key in groups {
            let hash = hasher.hash_one(&key);
            let duplicate = match &seen {
                Some(table) => table.find(hash, |&i| items[i].1 == key).is_some(),
                None => items.iter().any(|(h, k)| *h == hash && *k == key),
            };
            if duplicate {
                continue;
            }
            if let Some(table) = &mut seen {
                table.insert_unique(hash, items.len(), |&i| items[i].0);
            } else if items.len() == PAIRWISE_DEDUP_MAX {
                let mut table = HashTable::with_capacity(items.len() * 2);
                for (i, (h, _)) in items.iter().enumerate() {
                    table.insert_unique(*h, i, |&j| items[j].0);
                }
                table.insert_unique(hash, items.len(), |&j| items[j].0);
                seen = Some(table);
            }
            items.push((hash, key));
        }
        Self { items }
    }
}

impl<K> Default for GroupSet<K> {
    /// No groups (the total only).
    fn default() -> Self {
        Self {
            items: SmallVec::new(),
        }
    }
}

impl<K> GroupSet<K> {
    /// The groups with their hashes, in the caller's order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &(u64, K)> {
        self.items.iter()
    }

    /// The number of distinct groups.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The `index`-th group and its hash.
    pub(crate) fn get(&self, index: usize) -> (u64, &K) {
        let (hash, key) = &self.items[index];
        (*hash, key)
    }

    /// Overrides a hash, to test hash collisions.
    #[cfg(test)]
    pub(crate) fn set_hash_for_test(&mut self, index: usize, hash: u64) {
        self.items[index].0 = hash;
    }

    /// Takes the key at `index` (in the caller's order), dropping the rest.
    pub(crate) fn into_key(self, index: usize) -> Option<K> {
        self.items.into_iter().nth(index).map(|(_, key)| key)
    }
}
