//! Slab-like storage that grows without copying: records live in chunks that never move.
//!
//! [`Records`](super::records::Records) keeps task records, waiters and `wait` registrations
//! here, under the pool's lock. A `Vec`-backed slab grows by doubling, which copies every
//! live record into the new allocation: in a burst of 200,000 spawns the last doubling was one
//! critical section of about 10 ms (25 MB copied), during which every other thread waited for
//! the lock (measured with `examples/lock_hold.rs`). Here the first chunk grows like a `Vec`
//! up to [`CHUNK`] slots, so a small pool stays small and the largest copy is of
//! `CHUNK / 2` records; every later chunk is allocated once with exactly [`CHUNK`] slots and
//! never reallocated. Growing past the first chunk adds a chunk and copies nothing but the
//! chunk list (one header per 4,096 slots). Chunks are large so that a slot is found with a
//! shift and a mask, and so that allocating them is rare: each large `malloc` costs tens of
//! thousands of instructions in glibc while freed task cells sit in its fast bins (chunks of
//! 256 slots made that 150 instructions per spawn; chunks doubling in size cost more per
//! lookup).
//!
//! Like a slab: O(1) insert, lookup and removal by index; freed slots are reused, most
//! recently freed first. [`compact`](Slots::compact) moves live slots down into the holes
//! (reporting each move), then frees the chunks left empty at the end.

use std::mem;

/// Slots per chunk (a power of two).
pub(crate) const CHUNK: usize = 4096;
const SHIFT: u32 = CHUNK.trailing_zeros();
const MASK: usize = CHUNK - 1;

enum Slot<T> {
    /// Free; the index of the next free slot (`usize::MAX`: none).
    Vacant(usize),
    Occupied(T),
}

/// See the [module documentation](self).
pub(crate) struct Slots<T> {
    /// Every chunk but the last holds exactly [`CHUNK`] slots.
    chunks: Vec<Vec<Slot<T>>>,
    /// Occupied slots.
    len: usize,
    /// The most recently freed slot (`usize::MAX`: none).
    free: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
            free: usize::MAX,
        }
    }
}

impl<T> Slots<T> {
    /// Occupied slots.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated, free or not.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        match self.chunks.len() {
            0 => 0,
            1 => self.chunks[0].capacity(),
            n => n * CHUNK,
        }
    }

    /// Slots in use or freed (indexes handed out so far, and not compacted away).
    #[inline]
    fn slots(&self) -> usize {
        match self.chunks.last() {
            None => 0,
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
        }
    }

    #[inline]
    fn slot(&self, index: usize) -> Option<&Slot<T>> {
        self.chunks.get(index >> SHIFT)?.get(index & MASK)
    }

    #[inline]
    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot<T>> {
        self.chunks.get_mut(index >> SHIFT)?.get_mut(index & MASK)
    }

    /// Stores `value` and returns its index.
    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        let free = self.free;
        if let Some(slot) = self.slot_mut(free) {
            let Slot::Vacant(next) = *slot else {
                unreachable!("the free list names only vacant slots")
            };
            *slot = Slot::Occupied(value);
            self.free = next;
            return free;
        }
        let index = self.slots();
        match self.chunks.last_mut() {
            // The first chunk grows like a `Vec` (`push` doubles it), never past `CHUNK`.
            Some(last) if last.len() < CHUNK => last.push(Slot::Occupied(value)),
            _ => self.push_chunk(value),
        }
        index
    }

    /// Starts a chunk with `value` in its first slot: the first chunk grows like a `Vec`,
    /// the others are allocated at their full size once.
    #[cold]
    #[inline(never)]
    fn push_chunk(&mut self, value: T) {
        let mut chunk = if self.chunks.is_empty() {
            Vec::new()
        } else {
            Vec::with_capacity(CHUNK)
        };
        chunk.push(Slot::Occupied(value));
        self.chunks.push(chunk);
    }

    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        match self.slot(index)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        match self.slot_mut(index)? {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant(_) => None,
        }
    }

    /// Removes and returns the value at `index`, if one is there.
    #[inline]
    pub(crate) fn try_remove(&mut self, index: usize) -> Option<T> {
        let free = self.free;
        let slot = self.slot_mut(index)?;
        if let Slot::Vacant(_) = slot {
            return None;
        }
        let Slot::Occupied(value) = mem::replace(slot, Slot::Vacant(free)) else {
            unreachable!("checked above")
        };
        self.free = index;
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(index, slot)| match slot {
                Slot::Occupied(value) => Some((index, value)),
                Slot::Vacant(_) => None,
            })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.chunks
            .iter_mut()
            .flatten()
            .enumerate()
            .filter_map(|(index, slot)| match slot {
                Slot::Occupied(value) => Some((index, value)),
                Slot::Vacant(_) => None,
            })
    }

    /// Moves every value into the lowest slots (`0..len`), calling `on_move(value, from, to)`
    /// for each one moved, then frees the chunks left empty; a lone first chunk is shrunk to
    /// `max(len, min_capacity)` slots. O(slots). Values are moved, never dropped.
    pub(crate) fn compact(
        &mut self,
        min_capacity: usize,
        mut on_move: impl FnMut(&mut T, usize, usize),
    ) {
        let len = self.len;
        // Two cursors: `hole` climbs to the next vacant slot below `len`, `top` descends to the
        // next occupied slot at or above `len`; there are exactly as many of each.
        let mut hole = 0;
        let mut top = self.slots();
        loop {
            while hole < len && matches!(self.slot(hole), Some(Slot::Occupied(_))) {
                hole += 1;
            }
            if hole >= len {
                break;
            }
            top -= 1;
            while top > len && matches!(self.slot(top), Some(Slot::Vacant(_))) {
                top -= 1;
            }
            let Some(slot) = self.slot_mut(top) else {
                unreachable!("a live value lies above every hole below `len`")
            };
            let Slot::Occupied(mut value) = mem::replace(slot, Slot::Vacant(usize::MAX)) else {
                unreachable!("`top` stopped at an occupied slot")
            };
            on_move(&mut value, top, hole);
            if let Some(slot) = self.slot_mut(hole) {
                *slot = Slot::Occupied(value);
            }
            hole += 1;
        }
        // Everything live is in `0..len`: drop the rest (vacant slots only).
        let chunks = len.div_ceil(CHUNK);
        self.chunks.truncate(chunks);
        if let Some(last) = self.chunks.last_mut() {
            last.truncate(len - (chunks - 1) * CHUNK);
        }
        if let [first] = self.chunks.as_mut_slice() {
            // A lone first chunk keeps room to grow like a `Vec` again (`shrink_to` copies
            // at most `CHUNK` slots).
            first.shrink_to(len.max(min_capacity));
        }
        if self.chunks.capacity() > 2 * self.chunks.len() + 4 {
            self.chunks.shrink_to_fit();
        }
        self.free = usize::MAX;
    }
}

impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;

    #[track_caller]
    fn index(&self, index: usize) -> &T {
        self.get(index).expect("no value at this index")
    }
}

impl<T> std::ops::IndexMut<usize> for Slots<T> {
    #[track_caller]
    fn index_mut(&mut self, index: usize) -> &mut T {
        self.get_mut(index).expect("no value at this index")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_slab_across_chunks() {
        let mut slots = Slots::default();
        let n = 2 * CHUNK + 17;
        let indexes: Vec<usize> = (0..n).map(|i| slots.insert(i)).collect();
        assert_eq!(
            indexes,
            (0..n).collect::<Vec<_>>(),
            "indexes handed out in order"
        );
        assert_eq!(slots.len(), n);
        assert_eq!(slots.capacity(), 3 * CHUNK);
        for i in (0..n).step_by(3) {
            assert_eq!(slots.try_remove(i), Some(i));
            assert_eq!(slots.try_remove(i), None, "removed once");
            assert_eq!(slots.get(i), None);
        }
        // Freed slots are reused, most recently freed first.
        let last_freed = (0..n).step_by(3).next_back().unwrap();
        assert_eq!(slots.insert(usize::MAX), last_freed);
        assert_eq!(slots[last_freed], usize::MAX);
        let live: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        assert_eq!(live.len(), slots.len());
        for (index, value) in slots.iter_mut() {
            if *value != usize::MAX {
                assert_eq!(*value, index);
            }
        }
        assert_eq!(slots.get(10 * n), None, "beyond the end");
        assert_eq!(slots.try_remove(10 * n), None);
    }

    #[test]
    fn growing_never_moves_a_full_chunk() {
        let mut slots = Slots::default();
        for i in 0..CHUNK {
            slots.insert(i);
        }
        let first = slots.chunks[0].as_ptr();
        for i in CHUNK..5 * CHUNK {
            slots.insert(i);
        }
        assert_eq!(
            slots.chunks[0].as_ptr(),
            first,
            "the first chunk stayed put"
        );
        assert!(slots.chunks.iter().all(|c| c.capacity() == CHUNK));
    }

    #[test]
    fn compaction_packs_reports_every_move_and_gives_memory_back() {
        let mut slots = Slots::default();
        let n = 3 * CHUNK;
        for i in 0..n {
            slots.insert(i);
        }
        // Keep every 100th value, scattered over every chunk.
        for i in 0..n {
            if i % 100 != 99 {
                slots.try_remove(i);
            }
        }
        let live = slots.len();
        let mut moves = Vec::new();
        slots.compact(64, |value, from, to| {
            assert_eq!(*value, from, "the value moved is the one at `from`");
            moves.push((from, to));
        });
        assert_eq!(slots.len(), live);
        assert_eq!(slots.capacity(), live.max(64), "one chunk, shrunk to fit");
        let mut values: Vec<usize> = slots.iter().map(|(_, &v)| v).collect();
        values.sort_unstable();
        assert_eq!(values, (0..n).filter(|i| i % 100 == 99).collect::<Vec<_>>());
        assert!(
            slots.iter().all(|(index, _)| index < live),
            "packed at the bottom"
        );
        for (from, to) in moves {
            assert!(to < live && from >= live);
            assert_eq!(slots.get(from), None);
            assert_eq!(slots[to], from);
        }
        // Inserting after a compaction appends after the packed values.
        assert_eq!(slots.insert(7), live);
    }

    #[test]
    fn compaction_keeps_the_chunks_still_needed() {
        let mut slots = Slots::default();
        for i in 0..4 * CHUNK {
            slots.insert(i);
        }
        for i in 0..CHUNK + 1 {
            slots.try_remove(i);
        }
        slots.compact(64, |_, _, _| {});
        assert_eq!(slots.len(), 3 * CHUNK - 1);
        assert_eq!(slots.capacity(), 3 * CHUNK);
        assert!(
            slots
                .iter()
                .all(|(index, &value)| value > CHUNK && index < 3 * CHUNK)
        );
        let all: Vec<usize> = slots.iter().map(|(index, _)| index).collect();
        for index in all {
            slots.try_remove(index).unwrap();
        }
        slots.compact(64, |_, _, _| panic!("nothing to move"));
        assert!(slots.is_empty());
        assert_eq!(slots.capacity(), 0, "all memory given back");
        assert_eq!(slots.insert(1), 0);
    }
}
