//! Slot pools: payload memory with size classes.
//!
//! Each pool has one writer (the allocator) and one reader (the receiver). The free
//! lists and generations live in the allocator's private memory, never in shared
//! memory, so no cross-process CAS and no ABA. A received slot is handed back through
//! the pool's return ring; the allocator checks every returned (slot, generation) pair
//! against what it handed out, and a pair it did not hand out is a protocol error.

use crate::runtime::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::ClassLayout;
use super::ring::{Consumer, Producer, PushError};
use super::shared_bytes::SharedBytes;
use super::{RawView, Region, ShmRing, Side};
use crate::wire::{Descriptor, SLOT_INLINE};

const CLASS_SHIFT: u32 = 24;
const INDEX_MASK: u32 = (1 << CLASS_SHIFT) - 1;

fn wire_slot(class: usize, index: u32) -> u32 {
    ((class as u32) << CLASS_SHIFT) | index
}

fn split_slot(slot: u32) -> (usize, u32) {
    ((slot >> CLASS_SHIFT) as usize, slot & INDEX_MASK)
}

fn return_entry(slot: u32, generation: u32) -> u64 {
    ((slot as u64) << 32) | generation as u64
}

/// A slot this process allocated and may write until it is sent or freed.
#[derive(Debug)]
pub(crate) struct OutSlot {
    pub slot: u32,
    pub generation: u32,
    ptr: *mut u8,
    capacity: usize,
}

// SAFETY: the slot's memory belongs to the mapping the allocator's owner (a session)
// keeps alive for as long as any of its OutSlots exist, and until the slot is sent
// nobody else may touch it (the allocator handed it out exactly once).
unsafe impl Send for OutSlot {}

impl OutSlot {
    /// The slot's bytes, writable in place.
    pub fn buffer(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr+capacity` lies in a live mapping and is exclusively ours
        // until this slot is sent (the receiver only reads it after the descriptor is
        // published, and may not write it).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.capacity) }
    }
}

/// The writer's side of a pool.
#[derive(Debug)]
pub(crate) struct SlotAllocator {
    view: RawView,
    classes: Vec<ClassLayout>,
    free: Vec<Vec<u32>>,
    generation: Vec<Vec<u32>>,
    outstanding: Vec<Vec<bool>>,
    returns: Consumer<ShmRing<u64>>,
    /// Where the in-use count per class is published (our own control block).
    usage: usize,
}

/// Payloads from this size on are written into the most recently returned slot.
const COLLECT_FIRST_FROM: usize = 32 << 10;

impl SlotAllocator {
    /// The allocator for the pool written by `side`.
    ///
    /// # Safety
    /// At most one allocator exists per pool (it consumes the pool's return ring).
    pub unsafe fn new(region: &Region, side: Side) -> Self {
        let classes = region.layout().classes.clone();
        let free = classes.iter().map(|c| (0..c.slot_count).rev().collect()).collect();
        let generation = classes.iter().map(|c| vec![0; c.slot_count as usize]).collect();
        let outstanding = classes.iter().map(|c| vec![false; c.slot_count as usize]).collect();
        // SAFETY: the caller guarantees we are this pool's only allocator, hence the only
        // consumer of its return ring.
        let returns = unsafe { Consumer::new(region.return_ring(side)) };
        let usage = super::layout::control::BLOCK + super::layout::control::IN_USE;
        SlotAllocator { view: region.view(side), classes, free, generation, outstanding, returns, usage }
    }

    pub fn max_payload(&self) -> usize {
        self.classes.last().map(|c| c.slot_size as usize).unwrap_or(0)
    }

    /// Takes back every slot the receiver returned. A return the allocator did not
    /// hand out (wrong generation, unknown slot, returned twice) is an error.
    pub fn collect_returns(&mut self) -> Result<(), String> {
        while let Some(entry) = self.returns.try_pop().map_err(|c| format!("return ring cursor corrupt: {c:?}"))? {
            let slot = (entry >> 32) as u32;
            let generation = entry as u32;
            let (class, index) = split_slot(slot);
            let known = self.outstanding.get(class).and_then(|o| o.get(index as usize)).copied() == Some(true);
            if !known || self.generation[class][index as usize] != generation {
                return Err(format!("returned slot {slot:#x} generation {generation} was not handed out"));
            }
            self.outstanding[class][index as usize] = false;
            self.free[class].push(index);
            self.publish_usage(class);
        }
        Ok(())
    }

    fn publish_usage(&self, class: usize) {
        let in_use = self.classes[class].slot_count as usize - self.free[class].len();
        self.view.atomic_u32(self.usage + class * 4).store(in_use as u32, Ordering::Relaxed);
    }

    /// A slot for `len` bytes from the smallest class that has one free, or `None` when
    /// every fitting class is exhausted.
    pub fn alloc(&mut self, len: usize) -> Result<Option<OutSlot>, String> {
        // Large payloads take returns first: the free lists are LIFO, so the slot handed
        // out is the one the receiver released last, still in cache; cycling through the
        // whole pool would write every large payload into memory gone cold (1 MiB
        // streams ran at half the speed). Small ones collect returns only when they run
        // out: polling the return ring on every call costs a cache line bounced between
        // the processes, which doubled the 64-byte round trip.
        if len >= COLLECT_FIRST_FROM {
            self.collect_returns()?;
        } else if let Some(slot) = self.take(len) {
            return Ok(Some(slot));
        }
        self.collect_returns()?;
        Ok(self.take(len))
    }

    fn take(&mut self, len: usize) -> Option<OutSlot> {
        let class =
            (0..self.classes.len()).find(|&c| self.classes[c].slot_size as usize >= len && !self.free[c].is_empty())?;
        let index = self.free[class].pop()?;
        let c = self.classes[class];
        let generation = self.generation[class][index as usize].wrapping_add(1).max(1);
        self.generation[class][index as usize] = generation;
        self.outstanding[class][index as usize] = true;
        self.publish_usage(class);
        let offset = c.offset + index as usize * c.slot_size as usize;
        Some(OutSlot {
            slot: wire_slot(class, index),
            generation,
            ptr: self.view.ptr(offset),
            capacity: c.slot_size as usize,
        })
    }

    /// Puts back a slot that was allocated but never sent.
    pub fn free_unsent(&mut self, slot: OutSlot) {
        let (class, index) = split_slot(slot.slot);
        self.outstanding[class][index as usize] = false;
        self.free[class].push(index);
        self.publish_usage(class);
    }

    /// Free slots per class (after collecting returns).
    pub fn free_counts(&mut self) -> Result<Vec<usize>, String> {
        self.collect_returns()?;
        Ok(self.free.iter().map(Vec::len).collect())
    }
}

/// A slot received from the peer: readable until released.
#[derive(Debug)]
pub(crate) struct InSlot {
    pub slot: u32,
    pub generation: u32,
    ptr: *const u8,
    len: usize,
}

// SAFETY: points into a mapping the owning session keeps alive; read-only access.
unsafe impl Send for InSlot {}
// SAFETY: as above.
unsafe impl Sync for InSlot {}

impl InSlot {
    /// The payload's length, from the validated descriptor.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The payload, read in place through volatile loads (the writer can still write it).
    ///
    /// # Safety
    /// The receiver's mapping must stay alive (the session that produced this slot is
    /// alive) for as long as the view is used.
    pub unsafe fn shared(&self) -> SharedBytes<'_> {
        // SAFETY: bounds were checked against the slot class in `accept`, and the caller
        // keeps the mapping alive. A peer that writes the slot anyway changes only the
        // bytes we copy, never their bounds: SharedBytes never makes a reference of them.
        unsafe { SharedBytes::from_raw(self.ptr, self.len) }
    }
}

/// The reader's side of a pool.
#[derive(Debug)]
pub(crate) struct SlotReceiver {
    view: RawView,
    classes: Vec<ClassLayout>,
    /// One bit per slot: set while we hold it, so a slot sent twice is caught.
    held: Vec<AtomicU64>,
    class_bit_base: Vec<usize>,
    returns: Mutex<Producer<ShmRing<u64>>>,
}

impl SlotReceiver {
    /// The receiver for the pool written by `writer`.
    ///
    /// # Safety
    /// At most one receiver exists per pool (it produces into the pool's return ring).
    pub unsafe fn new(region: &Region, writer: Side) -> Self {
        let classes = region.layout().classes.clone();
        let mut class_bit_base = Vec::new();
        let mut bits = 0usize;
        for c in &classes {
            class_bit_base.push(bits);
            bits += c.slot_count as usize;
        }
        let held = (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        // SAFETY: the caller guarantees we are the only producer of this return ring.
        let returns = Mutex::new(unsafe { Producer::new(region.return_ring(writer)) });
        SlotReceiver { view: region.view(writer), classes, held, class_bit_base, returns }
    }

    fn bit(&self, class: usize, index: u32) -> (usize, u64) {
        let b = self.class_bit_base[class] + index as usize;
        (b / 64, 1u64 << (b % 64))
    }

    /// Validates the slot a descriptor names and takes hold of it.
    pub fn accept(&self, d: &Descriptor) -> Result<InSlot, String> {
        debug_assert_ne!(d.slot, SLOT_INLINE);
        let (class, index) = split_slot(d.slot);
        let Some(c) = self.classes.get(class) else {
            return Err(format!("slot {:#x}: no class {class}", d.slot));
        };
        if index >= c.slot_count {
            return Err(format!("slot {:#x}: index {index} >= {} slots", d.slot, c.slot_count));
        }
        if d.payload_len > c.slot_size {
            return Err(format!("payload of {} bytes in a {}-byte slot", d.payload_len, c.slot_size));
        }
        let (word, mask) = self.bit(class, index);
        if self.held[word].fetch_or(mask, Ordering::AcqRel) & mask != 0 {
            return Err(format!("slot {:#x} sent again while still held", d.slot));
        }
        let offset = c.offset + index as usize * c.slot_size as usize;
        Ok(InSlot { slot: d.slot, generation: d.slot_gen, ptr: self.view.ptr(offset), len: d.payload_len as usize })
    }

    /// Hands a slot back to its writer.
    pub fn release(&self, slot: &InSlot) -> Result<(), String> {
        let (class, index) = split_slot(slot.slot);
        let (word, mask) = self.bit(class, index);
        self.held[word].fetch_and(!mask, Ordering::AcqRel);
        match self.returns.lock().try_push(return_entry(slot.slot, slot.generation)) {
            Ok(()) => Ok(()),
            // The ring holds every slot of the pool at once; full means the writer
            // resent slots without collecting them.
            Err(PushError::Full) => Err("return ring full: the writer is not collecting returned slots".into()),
            Err(PushError::Corrupt(c)) => Err(format!("return ring cursor corrupt: {c:?}")),
        }
    }

    /// Slots currently held.
    pub fn held_count(&self) -> u32 {
        self.held.iter().map(|w| w.load(Ordering::Relaxed).count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Geometry, LinkMemory, SlotClass};
    use super::*;
    use crate::wire::Descriptor;

    /// The host's and the cell's mappings of one link.
    fn link() -> (LinkMemory, Region) {
        let geometry = Geometry {
            ring_capacity: 4,
            classes: vec![
                SlotClass { slot_size: 64, slot_count: 2 },
                SlotClass { slot_size: 128, slot_count: 1 },
                SlotClass { slot_size: 1024, slot_count: 3 },
            ],
        };
        let (link, handoff) = LinkMemory::create(&super::super::tests::record(geometry)).unwrap();
        let cell = handoff.map_as_cell().unwrap();
        (link, cell)
    }

    fn descriptor_for(s: &OutSlot, len: u32) -> Descriptor {
        Descriptor { slot: s.slot, slot_gen: s.generation, payload_len: len, ..Default::default() }
    }

    #[test]
    fn every_class_allocates_falls_back_and_returns() {
        let (host, cell) = link();
        // SAFETY: one allocator (in the host's mapping) and one receiver (in the cell's)
        // for the host pool in this test.
        let (mut alloc, recv) =
            unsafe { (SlotAllocator::new(&host.region, Side::Host), SlotReceiver::new(&cell, Side::Host)) };
        assert_eq!(alloc.max_payload(), 1024);
        let mut slots = Vec::new();
        for _ in 0..6 {
            slots.push(alloc.alloc(10).unwrap().expect("small requests fall back to larger classes"));
        }
        let classes: Vec<usize> = slots.iter().map(|s| split_slot(s.slot).0).collect();
        assert_eq!(classes, vec![0, 0, 1, 2, 2, 2]);
        assert!(alloc.alloc(10).unwrap().is_none(), "pool exhausted");
        assert!(alloc.alloc(2000).unwrap().is_none(), "larger than any class");

        // Write through the allocator's view, read through the receiver's, return.
        for (i, s) in slots.iter_mut().enumerate() {
            s.buffer()[..4].copy_from_slice(&(i as u32).to_le_bytes());
        }
        for (i, s) in slots.iter().enumerate() {
            let held = recv.accept(&descriptor_for(s, 4)).unwrap();
            // SAFETY: the cell's mapping is alive and the slot is held.
            assert!(unsafe { held.shared() } == (i as u32).to_le_bytes()[..]);
            recv.release(&held).unwrap();
        }
        assert_eq!(recv.held_count(), 0);
        assert_eq!(alloc.free_counts().unwrap(), vec![2, 1, 3]);
        let again = alloc.alloc(100).unwrap().unwrap();
        assert_eq!(split_slot(again.slot).0, 1);
        assert!(again.generation >= 2, "generation bumps on reuse");
    }

    #[test]
    fn bad_slots_and_forged_returns_are_rejected() {
        let (host, cell) = link();
        // SAFETY: one allocator and one receiver for the host pool in this test.
        let (mut alloc, recv) =
            unsafe { (SlotAllocator::new(&host.region, Side::Host), SlotReceiver::new(&cell, Side::Host)) };
        let s = alloc.alloc(64).unwrap().unwrap();
        assert!(recv.accept(&Descriptor { slot: wire_slot(7, 0), ..Default::default() }).is_err());
        assert!(recv.accept(&Descriptor { slot: wire_slot(0, 2), ..Default::default() }).is_err());
        assert!(recv.accept(&descriptor_for(&s, 65)).is_err(), "length beyond the slot");
        let held = recv.accept(&descriptor_for(&s, 64)).unwrap();
        assert!(recv.accept(&descriptor_for(&s, 64)).unwrap_err().contains("still held"));
        recv.release(&held).unwrap();
        alloc.collect_returns().unwrap();
        // The receiver returns the same slot again: the allocator no longer has it out.
        let forged = InSlot { slot: s.slot, generation: s.generation, ptr: std::ptr::null(), len: 0 };
        recv.release(&forged).unwrap();
        assert!(alloc.collect_returns().unwrap_err().contains("not handed out"));
    }
}
