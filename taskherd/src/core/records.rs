//! A slab of records that gives its memory back after a burst.
//!
//! Task records, waiters and `wait` registrations live in [`Records`]: O(1) insert, lookup
//! and removal by index, like a slab, in [`Slots`] (chunks that never move, so growing never
//! copies the records under the lock). A plain slab keeps its peak capacity for as long as one
//! record lives (it cannot move live records), so after a burst of 100,000 waiters with one
//! left it kept tens of megabytes. `Records` compacts instead: while it is less than an eighth
//! full, live records move down and the chunks left empty are freed (invariant 4), at most
//! [`STEP_MOVES`](super::slots::STEP_MOVES) records per removal, amortised O(1) per removal: [`compact`](Records::compact) reports the
//! moves (for waiters, whose queue links the caller fixes up),
//! [`maybe_compact`](Records::maybe_compact) does not. (An eighth rather than a quarter: a burst drained oldest first leaves its live
//! records at the end, so nearly all of them move at each compaction; compacting less often
//! halves that work, and memory stays within eight times what is live.)
//!
//! Moving a record changes its index, but its holder (a future, a task's guard) keeps the old
//! [`RecordRef`]. Every record therefore has a unique id, kept in the ref next to the index;
//! a moved record's id is entered in a small forwarding table that maps it to its new index.
//! A lookup whose index no longer holds its id follows the table. The table holds only moved
//! records that are still alive (an entry goes with its record), so it too is bounded by
//! what is live. Internal references between records (the waiters' queue links) are fixed up
//! by the caller from the list of moves.

use super::slots::Slots;
use hashbrown::HashTable;

/// Records at most this many slots large are never compacted (tiny tables only churn).
pub(crate) const MIN_RETAINED_CAPACITY: usize = 64;

/// Identifies one record: where it was put, and its unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef {
    index: usize,
    id: u64,
}

impl RecordRef {
    /// The record's unique id; ids grow with insertion order, by 2: even in a table made
    /// with [`Records::default`], odd in one made with [`Records::odd`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

struct Slot<T> {
    id: u64,
    /// Entered in the forwarding table.
    moved: bool,
    value: T,
}

pub(crate) struct Records<T> {
    slots: Slots<Slot<T>>,
    next_id: u64,
    /// `(id, index)` of records moved by a compaction.
    moved: HashTable<(u64, usize)>,
}

impl<T> Default for Records<T> {
    fn default() -> Self {
        Self {
            slots: Slots::default(),
            next_id: 0,
            moved: HashTable::new(),
        }
    }
}

/// Spreads sequential ids over a hash table's buckets and control bytes.
pub(crate) fn id_hash(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl<T> Records<T> {
    /// Records whose ids are odd, so that a [`RecordRef`] tells which of two tables it is
    /// from.
    pub(crate) fn odd() -> Self {
        Self {
            next_id: 1,
            ..Self::default()
        }
    }

    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> RecordRef {
        let id = self.next_id;
        self.next_id += 2;
        let index = self.slots.insert(Slot {
            id,
            moved: false,
            value,
        });
        RecordRef { index, id }
    }

    /// The current index of the record `at` refers to, or `None` if it was removed.
    #[inline]
    pub(crate) fn find(&self, at: RecordRef) -> Option<usize> {
        match self.slots.get(at.index) {
            Some(slot) if slot.id == at.id => Some(at.index),
            _ if self.moved.is_empty() => None,
            _ => self.find_moved(at.id),
        }
    }

    #[cold]
    fn find_moved(&self, id: u64) -> Option<usize> {
        self.moved
            .find(id_hash(id), |&(moved, _)| moved == id)
            .map(|&(_, index)| index)
    }

    /// Like [`find`](Self::find), and points `at` at the record's current index so the next
    /// lookup is direct.
    #[inline]
    pub(crate) fn find_and_update(&self, at: &mut RecordRef) -> Option<usize> {
        let index = self.find(*at)?;
        at.index = index;
        Some(index)
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.slots.get(index).map(|slot| &slot.value)
    }

    /// Removes the record at `index` and returns it (for the caller to drop after unlocking).
    #[inline]
    pub(crate) fn remove(&mut self, index: usize) -> Option<T> {
        let slot = self.slots.try_remove(index)?;
        if slot.moved {
            self.forget_move(slot.id);
        }
        Some(slot.value)
    }

    /// Removes a record's entry from the forwarding table.
    #[cold]
    fn forget_move(&mut self, id: u64) {
        if let Ok(entry) = self
            .moved
            .find_entry(id_hash(id), |&(moved, _)| moved == id)
        {
            entry.remove();
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Allocated record slots (for tests of memory bounds).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots.iter().map(|(index, slot)| (index, &slot.value))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slots
            .iter_mut()
            .map(|(index, slot)| (index, &mut slot.value))
    }

    /// Whether [`compact`](Self::compact) would give memory back.
    #[inline]
    pub(crate) fn wants_compaction(&self) -> bool {
        let capacity = self.slots.capacity();
        capacity > MIN_RETAINED_CAPACITY && self.slots.len() < capacity / 8
    }

    /// One bounded step of compaction (see [`Slots::compact_step`]: at most
    /// [`STEP_MOVES`](super::slots::STEP_MOVES) records move); appends every move as `(from, to)` to `moves`, for the caller to fix
    /// up references between records (the waiters' queue links). No user code runs: records
    /// are moved, not dropped.
    pub(crate) fn compact(&mut self, moves: &mut Vec<(usize, usize)>) {
        self.step_with(|from, to| moves.push((from, to)));
    }

    /// One step of compaction, entering every move in the forwarding table and reporting it
    /// to `on_move(from, to)`.
    fn step_with(&mut self, mut on_move: impl FnMut(usize, usize)) {
        let moved = &mut self.moved;
        self.slots
            .compact_step(MIN_RETAINED_CAPACITY, |slot, from, to| {
                on_move(from, to);
                Self::forward(moved, slot, to);
            });
        self.shrink_forwarding();
    }

    /// Enters a record's move in the forwarding table (or updates it).
    fn forward(moved: &mut HashTable<(u64, usize)>, slot: &mut Slot<T>, to: usize) {
        if slot.moved {
            if let Some(entry) = moved.find_mut(id_hash(slot.id), |&(id, _)| id == slot.id) {
                entry.1 = to;
            }
        } else {
            slot.moved = true;
            moved.insert_unique(id_hash(slot.id), (slot.id, to), |&(id, _)| id_hash(id));
        }
    }

    fn shrink_forwarding(&mut self) {
        let capacity = self.moved.capacity();
        if capacity > MIN_RETAINED_CAPACITY && self.moved.len() < capacity / 4 {
            self.moved.shrink_to_fit(|&(id, _)| id_hash(id));
        }
    }

    /// Compacts by one bounded step if the records are mostly empty, without reporting moves
    /// (for records nothing inside the state refers to): each step moves at most
    /// [`STEP_MOVES`](super::slots::STEP_MOVES) records, so no removal holds the lock for long however
    /// large the burst was; the steps continue at later removals while the records stay
    /// mostly empty.
    #[inline]
    pub(crate) fn maybe_compact(&mut self) {
        if self.wants_compaction() {
            self.compact_step();
        }
    }

    #[cold]
    #[inline(never)]
    fn compact_step(&mut self) {
        self.step_with(|_, _| {});
    }
}

impl<T> std::ops::Index<usize> for Records<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        &self.slots[index].value
    }
}

impl<T> std::ops::IndexMut<usize> for Records<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.slots[index].value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_survive_compaction_and_memory_comes_back() {
        let mut records = Records::default();
        let refs: Vec<RecordRef> = (0..10_000).map(|i| records.insert(i)).collect();
        // Keep every 1000th record: the rest go, so the slab is mostly empty.
        for (i, at) in refs.iter().enumerate() {
            if i % 1000 != 999 {
                let index = records.find(*at).unwrap();
                assert_eq!(records.remove(index), Some(i));
            }
        }
        assert!(records.wants_compaction());
        let mut moves = Vec::new();
        while records.wants_compaction() {
            records.compact(&mut moves);
        }
        assert!(
            records.capacity() <= 64,
            "shrunk to fit: {}",
            records.capacity()
        );
        assert!(!moves.is_empty());
        for (i, at) in refs.iter().enumerate() {
            let found = records.find(*at);
            if i % 1000 == 999 {
                let index = found.expect("a live record is found after moving");
                assert_eq!(records[index], i);
            } else {
                assert_eq!(found, None, "a removed record is not found");
            }
        }
        // A new record reusing a moved record's old index is not mistaken for it.
        let old = refs[999];
        let fresh = records.insert(usize::MAX);
        assert_ne!(records.find(old), records.find(fresh));
        assert_eq!(records[records.find(old).unwrap()], 999);
        // Removing every record empties the forwarding table.
        for at in refs.iter().skip(999).step_by(1000).chain([&fresh]) {
            let index = records.find(*at).unwrap();
            records.remove(index).unwrap();
        }
        assert!(records.is_empty());
        assert!(records.moved.is_empty());
    }

    /// A burst drained oldest first (tasks that end in the order they were spawned) empties
    /// its low chunks first: they are freed as they empty, so memory comes back without
    /// moving the survivors (each move costs a forwarding entry and slower lookups). Only the
    /// last chunk's survivors move, once they fit an eighth of what is left, into the first
    /// chunk (which is never freed).
    #[test]
    fn a_burst_drained_oldest_first_moves_almost_no_record() {
        use super::super::slots::CHUNK;
        let mut records = Records::default();
        let n = 10 * CHUNK + CHUNK / 2;
        let refs: Vec<RecordRef> = (0..n).map(|i| records.insert(i)).collect();
        let mut moves = Vec::new();
        for (i, at) in refs.iter().enumerate() {
            let index = records.find(*at).expect("a live record is found");
            assert_eq!(records.remove(index), Some(i));
            if records.wants_compaction() {
                records.compact(&mut moves);
            }
            let live = n - i - 1;
            // The first chunk and the chunks that hold a live record, one partly empty.
            assert!(
                records.capacity() <= CHUNK + live.div_ceil(CHUNK) * CHUNK + CHUNK,
                "{} slots kept for {live} records",
                records.capacity()
            );
        }
        assert!(records.is_empty());
        assert!(records.capacity() <= CHUNK);
        assert!(
            moves.len() <= CHUNK / 2,
            "{} records moved, of {n}",
            moves.len()
        );
    }

    #[test]
    fn a_record_moved_twice_is_still_found() {
        let mut records = Records::default();
        let mut refs: Vec<RecordRef> = (0..1000).map(|i| records.insert(i)).collect();
        let keep = refs.pop().unwrap();
        for at in refs {
            records.remove(records.find(at).unwrap());
        }
        records.compact(&mut Vec::new());
        let more: Vec<RecordRef> = (0..1000).map(|i| records.insert(1000 + i)).collect();
        for at in more {
            records.remove(records.find(at).unwrap());
        }
        records.compact(&mut Vec::new());
        let mut at = keep;
        assert_eq!(records[records.find_and_update(&mut at).unwrap()], 999);
        assert_eq!(records.find(at), records.find(keep));
    }
}
