//! The set of groups one admission names: hashed once, deduplicated, in the caller's order.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use smallvec::SmallVec;

/// How many groups an admission can name before its set spills to the heap.
const INLINE_GROUPS: usize = 4;

/// Above this many groups, duplicates are found with a hash table instead of pairwise.
const PAIRWISE_DEDUP_MAX: usize = 16;

/// One group of an admission.
pub(crate) struct Item<K> {
    /// `hash_one(&key)` with the pool's hasher, computed outside the lock.
    pub(crate) hash: u64,
    /// The serial number of the group's entry once the admission counts in it (or waits in
    /// it); `0` before. Later lookups (release, cancel, grant, `abort_group`) find the entry by
    /// `hash` and `serial`, so they run no user code (no `K: Eq`).
    pub(crate) serial: u64,
    /// The key. `None` once it moved into a new entry of the group table: only a spawned
    /// task's admission gives its keys away (it never reads them again), which spares a clone.
    pub(crate) key: Option<K>,
}

impl<K> Item<K> {
    /// Where this group's entry is, once the admission counts (or waits) in it.
    #[inline]
    pub(crate) fn entry(&self) -> EntryRef {
        EntryRef {
            hash: self.hash,
            serial: self.serial,
        }
    }
}

/// Finds one group's entry without its key: the entry's hash and serial number.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryRef {
    pub(crate) hash: u64,
    pub(crate) serial: u64,
}

/// The entries one spawned task counts in, kept in its task record: hashes and serials only,
/// so the record stays small and holds no key (nothing in it runs user code when dropped).
///
/// Up to [`INLINE_GROUPS`] entries are kept inline, filled without capacity checks (a
/// `SmallVec` filled by pushes measured 90 instructions for 3 groups, this a third of it).
#[derive(Debug)]
pub(crate) enum EntryRefs {
    Inline(usize, [EntryRef; INLINE_GROUPS]),
    Spilled(Box<[EntryRef]>),
}

impl EntryRefs {
    /// The entries, in the caller's order.
    #[inline]
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, EntryRef> {
        match self {
            Self::Inline(len, items) => items[..*len].iter(),
            Self::Spilled(items) => items.iter(),
        }
    }

    /// Whether the admission names the group whose entry has this hash and serial.
    pub(crate) fn names(&self, hash: u64, serial: u64) -> bool {
        self.iter().any(|&entry| entry == EntryRef { hash, serial })
    }
}

/// The deduplicated groups of one admission, each with its hash.
///
/// Hashes are computed here, outside the pool's lock, and reused for every lookup the
/// admission and its release make. The caller's order is kept (first occurrence wins) because
/// refusals report the first full group in that order.
pub(crate) struct GroupSet<K> {
    items: SmallVec<[Item<K>; INLINE_GROUPS]>,
}

impl<K: Eq + Hash> GroupSet<K> {
    /// Hashes and deduplicates `groups`.
    ///
    /// Cost is O(n) for n groups (pairwise comparison for small n, where it is cheaper than a
    /// table). Allocates only when more than [`INLINE_GROUPS`] distinct groups are named.
    pub(crate) fn new<S: BuildHasher>(groups: impl IntoIterator<Item = K>, hasher: &S) -> Self {
        // Built in place: a set built as a local and then moved into `Self` was copied (168
        // bytes with `String` keys).
        let mut set = Self::default();
        let items = &mut set.items;
        let mut seen: Option<HashTable<usize>> = None;
        for key in groups {
            let hash = hasher.hash_one(&key);
            let same = |item: &Item<K>| item.hash == hash && item.key.as_ref() == Some(&key);
            let duplicate = match &seen {
                Some(table) => table.find(hash, |&i| same(&items[i])).is_some(),
                None => items.iter().any(same),
            };
            if duplicate {
                continue;
            }
            if let Some(table) = &mut seen {
                table.insert_unique(hash, items.len(), |&i| items[i].hash);
            } else if items.len() == PAIRWISE_DEDUP_MAX {
                let mut table = HashTable::with_capacity(items.len() * 2);
                for (i, item) in items.iter().enumerate() {
                    table.insert_unique(item.hash, i, |&j| items[j].hash);
                }
                table.insert_unique(hash, items.len(), |&j| items[j].hash);
                seen = Some(table);
            }
            items.push(Item {
                hash,
                serial: 0,
                key: Some(key),
            });
        }
        set
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
    /// The groups, in the caller's order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Item<K>> {
        self.items.iter()
    }

    /// The groups, in the caller's order.
    pub(crate) fn iter_mut(&mut self) -> std::slice::IterMut<'_, Item<K>> {
        self.items.iter_mut()
    }

    /// The keys still held, in the caller's order (a permit's keys are always all there).
    pub(crate) fn keys(&self) -> KeyIter<'_, K> {
        KeyIter {
            items: self.items.iter(),
        }
    }

    /// The number of distinct groups.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The `index`-th group.
    pub(crate) fn get(&self, index: usize) -> &Item<K> {
        &self.items[index]
    }

    /// The `index`-th group, to change it in tests.
    #[cfg(test)]
    pub(crate) fn get_mut(&mut self, index: usize) -> &mut Item<K> {
        &mut self.items[index]
    }

    /// The entries this admission counts in (valid once it is admitted).
    #[inline]
    pub(crate) fn entries(&self) -> EntryRefs {
        let len = self.items.len();
        if len > INLINE_GROUPS {
            return EntryRefs::Spilled(self.items.iter().map(Item::entry).collect());
        }
        let mut inline = [EntryRef::default(); INLINE_GROUPS];
        for (slot, item) in inline.iter_mut().zip(&self.items) {
            *slot = item.entry();
        }
        EntryRefs::Inline(len, inline)
    }

    /// A set with the entries of `entries` and no keys (their keys are gone).
    pub(crate) fn from_entries(entries: &EntryRefs) -> Self {
        Self {
            items: entries
                .iter()
                .map(|entry| Item {
                    hash: entry.hash,
                    serial: entry.serial,
                    key: None,
                })
                .collect(),
        }
    }

    /// Takes the key at `index` (in the caller's order).
    pub(crate) fn take_key(&mut self, index: usize) -> Option<K> {
        self.items.get_mut(index).and_then(|item| item.key.take())
    }
}

/// Clones of keys made outside the lock for the entries an admission has to create, by the
/// index of the group in its [`GroupSet`]: `K::clone` is user code and never runs under the
/// lock.
///
/// Indexed by the group's position (`None` where there is no clone), so that each lookup is
/// O(1) and an admission naming n new groups costs O(n) (invariant 7); a list of
/// `(index, key)` pairs searched at each lookup made it O(n²), most of it under the lock
/// (0.3 s for 40,000 groups). Allocates nothing for up to [`INLINE_GROUPS`] groups.
pub(crate) struct Spares<K> {
    keys: SmallVec<[Option<K>; INLINE_GROUPS]>,
}

impl<K> Default for Spares<K> {
    fn default() -> Self {
        Self {
            keys: SmallVec::new(),
        }
    }
}

impl<K> Spares<K> {
    /// Whether a clone of the `index`-th key is at hand.
    pub(crate) fn has(&self, index: usize) -> bool {
        self.keys.get(index).is_some_and(Option::is_some)
    }

    /// Takes the clone of the `index`-th key.
    pub(crate) fn take(&mut self, index: usize) -> Option<K> {
        self.keys.get_mut(index).and_then(Option::take)
    }
}

impl<K: Clone> Spares<K> {
    /// Clones the keys at `indices` (of `groups`) that have no spare yet. Runs user code: call
    /// it without the lock.
    pub(crate) fn fill(&mut self, groups: &GroupSet<K>, indices: &[usize]) {
        if self.keys.len() < groups.len() {
            self.keys.resize_with(groups.len(), || None);
        }
        for &index in indices {
            let Some(spare) = self.keys.get_mut(index) else {
                continue;
            };
            if spare.is_none() {
                spare.clone_from(&groups.get(index).key);
            }
        }
    }
}

/// The keys of a [`GroupSet`] that still holds them.
pub(crate) struct KeyIter<'a, K> {
    items: std::slice::Iter<'a, Item<K>>,
}

impl<'a, K> Iterator for KeyIter<'a, K> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        self.items.by_ref().find_map(|item| item.key.as_ref())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .items
            .as_slice()
            .iter()
            .filter(|item| item.key.is_some())
            .count();
        (left, Some(left))
    }
}

impl<K> ExactSizeIterator for KeyIter<'_, K> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spares are found by the group's position, however many groups there are and in
    /// whatever order they are asked for; a key already moved out has no spare, and a spare
    /// is cloned once.
    #[test]
    fn spares_are_kept_by_position() {
        let hasher = std::hash::RandomState::new();
        let mut groups = GroupSet::new((0..1_000u32).map(|i| i.to_string()), &hasher);
        assert_eq!(groups.take_key(7), Some("7".to_owned()));
        let mut spares = Spares::default();
        assert!(!spares.has(3));
        assert_eq!(spares.take(3), None);
        spares.fill(&groups, &[999, 3, 7, 500]);
        assert!(spares.has(999) && spares.has(3) && spares.has(500));
        assert!(!spares.has(7), "its key had moved out: nothing to clone");
        assert!(!spares.has(4) && !spares.has(1_000));
        assert_eq!(spares.take(500), Some("500".to_owned()));
        assert_eq!(spares.take(500), None, "taken once");
        // Filled again (a waiter's next try): only what is missing is cloned.
        spares.fill(&groups, &[500, 999]);
        assert_eq!(spares.take(999), Some("999".to_owned()));
        assert_eq!(spares.take(500), Some("500".to_owned()));
        assert_eq!(spares.take(3), Some("3".to_owned()));
    }

    /// Up to `INLINE_GROUPS` groups, spares allocate nothing.
    #[test]
    fn a_few_spares_stay_inline() {
        let hasher = std::hash::RandomState::new();
        let groups = GroupSet::new(["a", "b", "c"], &hasher);
        let mut spares = Spares::default();
        spares.fill(&groups, &[2, 0]);
        assert!(!spares.keys.spilled());
        assert_eq!(
            (spares.take(0), spares.take(1), spares.take(2)),
            (Some("a"), None, Some("c"))
        );
    }
}
