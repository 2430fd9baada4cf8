//! Where each field of a frame lies: the byte offsets of the 64-byte descriptor
//! (docs/PROTOCOL.md §6) and, derived from them, the 8-byte words of a ring entry that
//! the shared-memory ring reads and writes one at a time (§4). The ring, the codec and
//! the test kit's hand-written cell all take their positions from here, and the
//! compile-time checks at the bottom keep the derived words true to the offsets.

use super::{DESCRIPTOR_INLINE, DESCRIPTOR_SIZE, RING_ENTRY_SIZE};

/// Byte offsets of the descriptor's fields, all little-endian.
pub mod offset {
    /// `msg_id`, u64.
    pub const MSG_ID: usize = 0;
    /// `channel_id`, u32.
    pub const CHANNEL_ID: usize = 8;
    /// `method_id`, u32.
    pub const METHOD_ID: usize = 12;
    /// `flags`, u32 (its top bit is the ring entry's lap parity, never a flag).
    pub const FLAGS: usize = 16;
    /// `status`, u32.
    pub const STATUS: usize = 20;
    /// `payload_len`, u32.
    pub const PAYLOAD_LEN: usize = 24;
    /// `slot`, u32.
    pub const SLOT: usize = 28;
    /// `slot_gen`, u32.
    pub const SLOT_GEN: usize = 32;
    /// `credit`, u32.
    pub const CREDIT: usize = 36;
    /// `deadline_ns`, u64.
    pub const DEADLINE_NS: usize = 40;
    /// The first inline payload bytes, `DESCRIPTOR_INLINE` of them.
    pub const INLINE: usize = 48;
}

/// Bytes in a ring entry word.
pub const WORD: usize = 8;

/// Words of a ring entry (two cache lines).
pub const ENTRY_WORDS: usize = RING_ENTRY_SIZE / WORD;

/// The entry's first words: the descriptor.
pub const DESCRIPTOR_WORDS: usize = DESCRIPTOR_SIZE / WORD;

/// The word that holds `flags` (low half) and `status` (high half): the one the
/// producer writes last, with Release and the lap parity, and the consumer polls.
pub const LAP_WORD: usize = offset::FLAGS / WORD;

/// The word that holds `payload_len` (low half) and `slot` (high half): what says
/// whether the entry's second line is in use.
pub const LEN_SLOT_WORD: usize = offset::PAYLOAD_LEN / WORD;

/// Byte offset in the entry of the inline payload past the descriptor's own bytes.
pub const EXTENSION: usize = DESCRIPTOR_SIZE;

// The derived words are only true if the offsets fall as they say.
const _: () = {
    assert!(offset::FLAGS % WORD == 0 && offset::STATUS == offset::FLAGS + 4);
    assert!(offset::PAYLOAD_LEN % WORD == 0 && offset::SLOT == offset::PAYLOAD_LEN + 4);
    assert!(offset::INLINE + DESCRIPTOR_INLINE == DESCRIPTOR_SIZE);
    assert!(offset::DEADLINE_NS + 8 == offset::INLINE && offset::CREDIT + 4 == offset::DEADLINE_NS);
    assert!(offset::MSG_ID + 8 == offset::CHANNEL_ID && offset::CHANNEL_ID + 4 == offset::METHOD_ID);
    assert!(offset::METHOD_ID + 4 == offset::FLAGS && offset::STATUS + 4 == offset::PAYLOAD_LEN);
    assert!(offset::SLOT + 4 == offset::SLOT_GEN && offset::SLOT_GEN + 4 == offset::CREDIT);
    assert!(LAP_WORD < DESCRIPTOR_WORDS && LEN_SLOT_WORD < DESCRIPTOR_WORDS);
    assert!(DESCRIPTOR_WORDS * 2 == ENTRY_WORDS);
};
