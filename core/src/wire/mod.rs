//! The wire vocabulary: the 64-byte descriptor, its flags, the one status table,
//! method ids, control frames (`codec`: HELLO and the binary encoding of built-in
//! messages).
//!
//! Nothing here does I/O (the clock deadlines refer to is `crate::sys::clock`). Everything that decodes input from another process returns
//! an error instead of panicking; the exact byte layout is specified in
//! `docs/PROTOCOL.md` and pinned by the tests at the bottom of this file.

use std::fmt;

mod codec;
pub mod frame;
pub use codec::*;

/// Size of one descriptor.
pub const DESCRIPTOR_SIZE: usize = 64;
/// Size of one descriptor ring entry: the descriptor's cache line, then a second line
/// that carries the bytes of an inline payload past the descriptor's own 16.
pub const RING_ENTRY_SIZE: usize = 128;
/// Inline payload bytes inside the descriptor itself (its `inline` field).
pub const DESCRIPTOR_INLINE: usize = 16;
/// Payloads up to this many bytes travel inline, in the ring entry (the first 16 in the
/// descriptor, the rest in the entry's second cache line); larger ones in a slot.
pub const INLINE_CAPACITY: usize = DESCRIPTOR_INLINE + RING_ENTRY_SIZE - DESCRIPTOR_SIZE;
/// `slot` value meaning "the payload is inline".
pub const SLOT_INLINE: u32 = u32::MAX;
/// Channel carrying control frames and unary calls.
pub const CONTROL_CHANNEL: u32 = 0;

/// Protocol version spoken by this build. A major mismatch refuses the peer.
pub const PROTOCOL_VERSION_MAJOR: u16 = 2;
/// Minor version: additions a peer of the same major may ignore.
pub const PROTOCOL_VERSION_MINOR: u16 = 1;

/// True when a descriptor with this `slot` and `payload_len` has part of its inline
/// payload in the ring entry's second line (the one rule, for decoded descriptors and
/// for raw ring words alike).
pub fn entry_extension_used(slot: u32, payload_len: u32) -> bool {
    slot == SLOT_INLINE && payload_len as usize > DESCRIPTOR_INLINE
}

/// Descriptor flag bits (`flags` field, offset 16).
#[allow(missing_docs)]
pub mod flags {
    pub const REQUEST: u32 = 1 << 0;
    pub const RESPONSE: u32 = 1 << 1;
    pub const ERROR: u32 = 1 << 2;
    pub const DATA: u32 = 1 << 3;
    pub const EOS: u32 = 1 << 4;
    pub const CANCEL: u32 = 1 << 5;
    pub const CONTROL: u32 = 1 << 6;
    pub const NO_REPLY: u32 = 1 << 7;
    /// Every bit this version knows; any other bit is a protocol error.
    pub const KNOWN: u32 = REQUEST | RESPONSE | ERROR | DATA | EOS | CANCEL | CONTROL | NO_REPLY;
    /// Not a descriptor flag: the ring entry's lap parity (docs/PROTOCOL.md §4), set by
    /// the producer's ring and cleared by the consumer's before the descriptor is read.
    pub const LAP: u32 = 1 << 31;
}

/// Status codes: gRPC's canonical codes with gRPC's numbers, then cellshm's own from 100.
/// The same numbers are used by the C API and the Python binding; a code is never renumbered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Status {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
    /// The peer process died or closed its doorbell.
    PeerDead = 100,
    /// The local session was shut down.
    SessionClosed = 101,
    /// The payload is larger than the largest slot class.
    PayloadTooLarge = 102,
    /// The peer broke the protocol (bad descriptor, bad slot, bad encoding); it is dropped.
    ProtocolError = 103,
    /// Every peer slot of the hub is in use.
    HubFull = 104,
    /// An operating-system call failed; the message carries errno's text.
    SystemError = 105,
}

impl Status {
    /// Every status, in table order.
    pub const ALL: [Status; 23] = [
        Status::Ok,
        Status::Cancelled,
        Status::Unknown,
        Status::InvalidArgument,
        Status::DeadlineExceeded,
        Status::NotFound,
        Status::AlreadyExists,
        Status::PermissionDenied,
        Status::ResourceExhausted,
        Status::FailedPrecondition,
        Status::Aborted,
        Status::OutOfRange,
        Status::Unimplemented,
        Status::Internal,
        Status::Unavailable,
        Status::DataLoss,
        Status::Unauthenticated,
        Status::PeerDead,
        Status::SessionClosed,
        Status::PayloadTooLarge,
        Status::ProtocolError,
        Status::HubFull,
        Status::SystemError,
    ];

    /// True for the statuses a link produces locally about itself (PEER_DEAD,
    /// SESSION_CLOSED, PROTOCOL_ERROR): they never travel in a response, so receiving
    /// one always means what it says.
    pub const fn is_link_local(self) -> bool {
        matches!(self, Status::PeerDead | Status::SessionClosed | Status::ProtocolError)
    }

    /// The numeric code.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The status for a numeric code, if the code is in the table.
    pub fn from_code(code: u32) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| s.code() == code)
    }

    /// The canonical upper-case name, e.g. `"DEADLINE_EXCEEDED"`.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Cancelled => "CANCELLED",
            Status::Unknown => "UNKNOWN",
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Status::NotFound => "NOT_FOUND",
            Status::AlreadyExists => "ALREADY_EXISTS",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Status::FailedPrecondition => "FAILED_PRECONDITION",
            Status::Aborted => "ABORTED",
            Status::OutOfRange => "OUT_OF_RANGE",
            Status::Unimplemented => "UNIMPLEMENTED",
            Status::Internal => "INTERNAL",
            Status::Unavailable => "UNAVAILABLE",
            Status::DataLoss => "DATA_LOSS",
            Status::Unauthenticated => "UNAUTHENTICATED",
            Status::PeerDead => "PEER_DEAD",
            Status::SessionClosed => "SESSION_CLOSED",
            Status::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Status::ProtocolError => "PROTOCOL_ERROR",
            Status::HubFull => "HUB_FULL",
            Status::SystemError => "SYSTEM_ERROR",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The longest method name a side registers.
pub const MAX_METHOD_NAME: usize = 256;

/// Checks a method name as it is registered (`"Service.method"`, `"pkg.Svc.Method"`): 1
/// to [`MAX_METHOD_NAME`] bytes of UTF-8 without whitespace or control characters. Only
/// registration checks it: a call of any other name simply finds no method.
pub fn validate_method_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_METHOD_NAME || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        let shown: String = name.chars().take(64).collect();
        let more = if name.chars().count() > 64 { "..." } else { "" };
        return Err(format!(
            "method name {shown:?}{more} is not 1 to {MAX_METHOD_NAME} bytes without whitespace or control characters"
        ));
    }
    Ok(())
}

/// Method id of `"Service.method"`: FNV-1a 64 over the UTF-8 bytes, folded
/// `(h >> 32) ^ h` to 32 bits. 0 is reserved, so a name folding to 0 gets id 1.
pub const fn method_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let folded = ((hash >> 32) ^ hash) as u32;
    if folded == 0 {
        1
    } else {
        folded
    }
}

/// How a method is called, as `cellshm.Introspect.methods` reports it (a u32 on the
/// wire): gRPC's four kinds, and `Stream` for a stream method registered without saying
/// which way its items flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response (0).
    Unary = 0,
    /// A stream method of undeclared direction (1).
    Stream = 1,
    /// One request, a stream of responses (2).
    ServerStreaming = 2,
    /// A stream of requests, one response (3).
    ClientStreaming = 3,
    /// Streams both ways (4).
    Bidi = 4,
}

impl MethodKind {
    /// The kind of a method with these `.proto` stream markers.
    pub const fn of(client_streaming: bool, server_streaming: bool) -> MethodKind {
        match (client_streaming, server_streaming) {
            (false, false) => MethodKind::Unary,
            (false, true) => MethodKind::ServerStreaming,
            (true, false) => MethodKind::ClientStreaming,
            (true, true) => MethodKind::Bidi,
        }
    }

    /// Whether it is served as a stream method.
    pub const fn is_stream(self) -> bool {
        !matches!(self, MethodKind::Unary)
    }

    /// The kind numbered `code` on the wire, if any.
    pub const fn from_code(code: u32) -> Option<MethodKind> {
        Some(match code {
            0 => MethodKind::Unary,
            1 => MethodKind::Stream,
            2 => MethodKind::ServerStreaming,
            3 => MethodKind::ClientStreaming,
            4 => MethodKind::Bidi,
            _ => return None,
        })
    }

    /// A stream method's kind from the number a caller of the C or Python API passed:
    /// unary and unknown numbers are refused, with words that say which are allowed.
    pub fn stream_from_code(code: u32) -> Result<MethodKind, String> {
        match MethodKind::from_code(code) {
            Some(kind) if kind.is_stream() => Ok(kind),
            _ => Err(format!(
                "kind {code} is not a stream kind: 1 (stream), 2 (server streaming), 3 (client streaming) or 4 (bidi)"
            )),
        }
    }

    /// Whether a method served as `self` can be called as `wanted`: the same kind, or
    /// a stream of undeclared direction for any stream.
    pub const fn serves(self, wanted: MethodKind) -> bool {
        self as u32 == wanted as u32 || (matches!(self, MethodKind::Stream) && wanted.is_stream())
    }

    /// Lower-case words, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            MethodKind::Unary => "unary",
            MethodKind::Stream => "stream",
            MethodKind::ServerStreaming => "server streaming",
            MethodKind::ClientStreaming => "client streaming",
            MethodKind::Bidi => "bidi streaming",
        }
    }
}

/// One descriptor, the only unit a ring carries. Encoded little-endian at the
/// offsets documented on each field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Offset 0. Unique per sender; a response echoes its request's.
    pub msg_id: u64,
    /// Offset 8. 0 = control frames and unary calls; otherwise a stream.
    pub channel_id: u32,
    /// Offset 12. Method id, echoed in responses; the control kind on control frames.
    pub method_id: u32,
    /// Offset 16. See [`flags`].
    pub flags: u32,
    /// Offset 20. Status code when `ERROR` is set.
    pub status: u32,
    /// Offset 24.
    pub payload_len: u32,
    /// Offset 28. `class << 24 | index`, or [`SLOT_INLINE`].
    pub slot: u32,
    /// Offset 32. Generation of the slot when it was handed over.
    pub slot_gen: u32,
    /// Offset 36. Stream flow control: DATA frames granted to the receiver of this frame.
    pub credit: u32,
    /// Offset 40. Absolute CLOCK_MONOTONIC deadline in ns; 0 = none.
    pub deadline_ns: u64,
    /// Offset 48. Inline payload bytes (the first 16; the rest, up to
    /// [`INLINE_CAPACITY`], in the ring entry's second line).
    pub inline: [u8; DESCRIPTOR_INLINE],
}

impl Descriptor {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; DESCRIPTOR_SIZE] {
        use frame::offset::*;
        let mut out = [0u8; DESCRIPTOR_SIZE];
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(MSG_ID, &self.msg_id.to_le_bytes());
        put(CHANNEL_ID, &self.channel_id.to_le_bytes());
        put(METHOD_ID, &self.method_id.to_le_bytes());
        put(FLAGS, &self.flags.to_le_bytes());
        put(STATUS, &self.status.to_le_bytes());
        put(PAYLOAD_LEN, &self.payload_len.to_le_bytes());
        put(SLOT, &self.slot.to_le_bytes());
        put(SLOT_GEN, &self.slot_gen.to_le_bytes());
        put(CREDIT, &self.credit.to_le_bytes());
        put(DEADLINE_NS, &self.deadline_ns.to_le_bytes());
        put(INLINE, &self.inline);
        out
    }

    /// Decodes wire bytes. Any bit pattern decodes; [`Descriptor::check_shape`] judges it.
    pub fn decode(bytes: &[u8; DESCRIPTOR_SIZE]) -> Descriptor {
        use frame::offset::*;
        let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut inline = [0u8; DESCRIPTOR_INLINE];
        inline.copy_from_slice(&bytes[INLINE..INLINE + DESCRIPTOR_INLINE]);
        Descriptor {
            msg_id: u64_at(MSG_ID),
            channel_id: u32_at(CHANNEL_ID),
            method_id: u32_at(METHOD_ID),
            flags: u32_at(FLAGS),
            status: u32_at(STATUS),
            payload_len: u32_at(PAYLOAD_LEN),
            slot: u32_at(SLOT),
            slot_gen: u32_at(SLOT_GEN),
            credit: u32_at(CREDIT),
            deadline_ns: u64_at(DEADLINE_NS),
            inline,
        }
    }

    /// True when the payload travels inline.
    pub fn is_inline(&self) -> bool {
        self.slot == SLOT_INLINE
    }

    /// The inline payload bytes the descriptor itself holds (all of them for control
    /// frames, which [`Descriptor::check_shape`] keeps within the descriptor).
    pub fn inline_payload(&self) -> &[u8] {
        &self.inline[..(self.payload_len as usize).min(DESCRIPTOR_INLINE)]
    }

    /// True when part of the inline payload lies in the ring entry's second line.
    pub fn uses_entry_extension(&self) -> bool {
        entry_extension_used(self.slot, self.payload_len)
    }

    /// What kind of frame this is, after checking that flags, status, channel and
    /// inline length fit together. Slot bounds are checked by the pool that owns them.
    pub fn check_shape(&self) -> Result<FrameKind, String> {
        let f = self.flags;
        if f & !flags::KNOWN != 0 {
            return Err(format!("unknown flag bits {:#x}", f & !flags::KNOWN));
        }
        if self.is_inline() && self.payload_len as usize > INLINE_CAPACITY {
            return Err(format!("inline payload of {} bytes (max {INLINE_CAPACITY})", self.payload_len));
        }
        let is_error = f & flags::ERROR != 0;
        if is_error == (self.status == 0) {
            return Err(format!("status {} does not match the ERROR flag", self.status));
        }
        if self.channel_id != CONTROL_CHANNEL {
            return self.check_stream_shape().map(FrameKind::Stream);
        }
        if f & (flags::DATA | flags::EOS | flags::CANCEL) != 0 {
            return Err(format!("stream flags {f:#x} on channel 0"));
        }
        if self.credit != 0 {
            return Err(format!("credit {} on channel 0", self.credit));
        }
        let kind = if f & flags::CONTROL != 0 {
            if f != flags::CONTROL {
                return Err(format!("control frame with extra flags {f:#x}"));
            }
            if !self.is_inline() {
                return Err("control frame with a slot payload".into());
            }
            if self.payload_len as usize > DESCRIPTOR_INLINE {
                return Err(format!(
                    "control frame with a {}-byte payload (max {DESCRIPTOR_INLINE})",
                    self.payload_len
                ));
            }
            match ControlKind::from_code(self.method_id) {
                Some(kind) => FrameKind::Control(kind),
                None => return Err(format!("unknown control kind {}", self.method_id)),
            }
        } else if f & flags::REQUEST != 0 {
            if f & !(flags::REQUEST | flags::NO_REPLY) != 0 {
                return Err(format!("request with flags {f:#x}"));
            }
            if self.method_id == 0 {
                return Err("request for reserved method id 0".into());
            }
            FrameKind::Request { no_reply: f & flags::NO_REPLY != 0 }
        } else if f & flags::RESPONSE != 0 {
            if f & !(flags::RESPONSE | flags::ERROR) != 0 {
                return Err(format!("response with flags {f:#x}"));
            }
            FrameKind::Response { error: f & flags::ERROR != 0 }
        } else {
            return Err(format!("frame with neither REQUEST, RESPONSE nor CONTROL ({f:#x})"));
        };
        Ok(kind)
    }

    /// A frame on a stream channel: exactly one of OPEN (REQUEST), DATA, EOS, CANCEL,
    /// FINISH (RESPONSE, optionally ERROR), or a credit grant (no flags, credit > 0).
    fn check_stream_shape(&self) -> Result<StreamFrame, String> {
        let f = self.flags;
        let empty = self.payload_len == 0;
        Ok(match f {
            flags::REQUEST if self.method_id != 0 => StreamFrame::Open,
            flags::DATA => StreamFrame::Data,
            flags::EOS if empty => StreamFrame::Eos,
            flags::CANCEL if empty => StreamFrame::Cancel,
            flags::RESPONSE => StreamFrame::Finish { error: false },
            f if f == flags::RESPONSE | flags::ERROR => StreamFrame::Finish { error: true },
            0 if empty && self.credit > 0 => StreamFrame::Credit,
            _ => return Err(format!("stream frame with flags {f:#x} on channel {}", self.channel_id)),
        })
    }
}

/// The kind of a frame on a stream channel (channel id != 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// Opens the channel: `method_id`, the initial request, the opener's window in `credit`.
    Open,
    /// One item.
    Data,
    /// The sender will send no more items.
    Eos,
    /// Give up the stream (either side).
    Cancel,
    /// The callee's final status (and payload); ends the stream.
    Finish {
        /// ERROR flag set: the payload is a UTF-8 message.
        error: bool,
    },
    /// Grants the receiver `credit` more DATA frames.
    Credit,
}

/// The kind of a frame whose shape has been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A call; `no_reply` for notifications.
    Request {
        /// The sender expects no response.
        no_reply: bool,
    },
    /// The answer to a call; `error` when it carries a status and message.
    Response {
        /// ERROR flag set: the payload is a UTF-8 message.
        error: bool,
    },
    /// A control frame on channel 0.
    Control(ControlKind),
    /// A frame on a stream channel.
    Stream(StreamFrame),
}

/// Control frames (flags == CONTROL, channel 0, kind in `method_id`, inline payload).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// Cell → host: version, role, limits. Answered by `HelloAck`.
    Hello = 1,
    /// Host → cell: the host's version, or an error status when refused.
    HelloAck = 2,
    /// Liveness probe; answered by `Pong` echoing msg_id.
    Ping = 3,
    /// Answer to `Ping`.
    Pong = 4,
    /// Give up on the call whose msg_id is in the inline payload (streams use it too).
    Cancel = 5,
    /// The sender is leaving on purpose; no more requests will be sent.
    Goodbye = 6,
}

impl ControlKind {
    /// The kind for a `method_id` value of a control frame.
    pub fn from_code(code: u32) -> Option<ControlKind> {
        Some(match code {
            1 => ControlKind::Hello,
            2 => ControlKind::HelloAck,
            3 => ControlKind::Ping,
            4 => ControlKind::Pong,
            5 => ControlKind::Cancel,
            6 => ControlKind::Goodbye,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_offsets_match_the_wire_table() {
        let d = Descriptor {
            msg_id: 0x0102_0304_0506_0708,
            channel_id: 0x1112_1314,
            method_id: 0x2122_2324,
            flags: 0x3132_3334,
            status: 0x4142_4344,
            payload_len: 0x5152_5354,
            slot: 0x6162_6364,
            slot_gen: 0x7172_7374,
            credit: 0x8182_8384,
            deadline_ns: 0x9192_9394_9596_9798,
            inline: *b"ABCDEFGHIJKLMNOP",
        };
        let b = d.encode();
        assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[8..12], &[0x14, 0x13, 0x12, 0x11]);
        assert_eq!(&b[12..16], &[0x24, 0x23, 0x22, 0x21]);
        assert_eq!(&b[16..20], &[0x34, 0x33, 0x32, 0x31]);
        assert_eq!(&b[20..24], &[0x44, 0x43, 0x42, 0x41]);
        assert_eq!(&b[24..28], &[0x54, 0x53, 0x52, 0x51]);
        assert_eq!(&b[28..32], &[0x64, 0x63, 0x62, 0x61]);
        assert_eq!(&b[32..36], &[0x74, 0x73, 0x72, 0x71]);
        assert_eq!(&b[36..40], &[0x84, 0x83, 0x82, 0x81]);
        assert_eq!(&b[40..48], &[0x98, 0x97, 0x96, 0x95, 0x94, 0x93, 0x92, 0x91]);
        assert_eq!(&b[48..64], b"ABCDEFGHIJKLMNOP");
        assert_eq!(Descriptor::decode(&b), d);
    }

    #[test]
    fn method_ids_are_fnv1a_folded() {
        // FNV-1a 64 of "" is the offset basis 0xcbf29ce484222325.
        assert_eq!(method_id(""), 0xcbf2_9ce4 ^ 0x8422_2325);
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(method_id("a"), 0xaf63_dc4c ^ 0x8601_ec8c);
        assert_ne!(method_id("Echo.echo"), method_id("Echo.echO"));
        // The vectors of docs/PROTOCOL.md §6, shared with every other implementation.
        for (name, id) in [
            ("Echo.echo", 0x3e89_5c50),
            ("cellshm.Lifecycle.ready", 0xb194_4220),
            ("cellshm.Lifecycle.goodbye", 0xbf97_87fa),
            ("cellshm.Lifecycle.heartbeat", 0xff25_ea19),
            ("cellshm.Log.event", 0x8d14_7daa),
            ("cellshm.Log.set_filter", 0x9620_887b),
            ("cellshm.Introspect.methods", 0xbf8f_592e),
            ("cellshm.Introspect.descriptors", 0x1c19_846d),
        ] {
            assert_eq!(method_id(name), id, "{name}");
        }
        assert_ne!(builtin::LIFECYCLE_READY_ID, 0);
    }

    #[test]
    fn status_table_is_stable() {
        assert_eq!(Status::DeadlineExceeded.code(), 4);
        assert_eq!(Status::Unimplemented.code(), 12);
        assert_eq!(Status::Unauthenticated.code(), 16);
        assert_eq!(Status::PeerDead.code(), 100);
        assert_eq!(Status::ProtocolError.code(), 103);
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::from_code(17), None);
    }

    fn request(flags: u32) -> Descriptor {
        Descriptor { msg_id: 1, method_id: 7, flags, slot: SLOT_INLINE, ..Default::default() }
    }

    #[test]
    fn shapes_are_checked() {
        assert_eq!(request(flags::REQUEST).check_shape(), Ok(FrameKind::Request { no_reply: false }));
        assert_eq!(request(flags::REQUEST | flags::NO_REPLY).check_shape(), Ok(FrameKind::Request { no_reply: true }));
        assert!(request(0).check_shape().is_err());
        let on = |flags: u32, credit: u32, len: u32| {
            let mut d = request(flags);
            d.channel_id = 3;
            d.credit = credit;
            d.payload_len = len;
            d.check_shape()
        };
        assert_eq!(on(flags::REQUEST, 8, 0), Ok(FrameKind::Stream(StreamFrame::Open)));
        assert_eq!(on(flags::DATA, 1, 16), Ok(FrameKind::Stream(StreamFrame::Data)));
        assert_eq!(on(0, 4, 0), Ok(FrameKind::Stream(StreamFrame::Credit)));
        assert!(on(0, 0, 0).is_err(), "an empty credit frame");
        assert!(on(flags::EOS, 0, 3).is_err(), "EOS with a payload");
        assert!(on(flags::DATA | flags::REQUEST, 0, 0).is_err());
        assert!(request(flags::DATA).check_shape().is_err(), "DATA on channel 0");
        assert!(request(1 << 20).check_shape().is_err());
        assert!(request(flags::REQUEST | flags::RESPONSE).check_shape().is_err());
        assert!(request(flags::REQUEST | flags::ERROR).check_shape().is_err());
        let mut big_inline = request(flags::REQUEST);
        big_inline.payload_len = INLINE_CAPACITY as u32;
        assert!(big_inline.check_shape().is_ok(), "80 bytes inline: 16 in the descriptor, 64 in the entry");
        big_inline.payload_len += 1;
        assert!(big_inline.check_shape().is_err());
        let mut big_control = request(flags::CONTROL);
        big_control.method_id = ControlKind::Ping as u32;
        big_control.payload_len = DESCRIPTOR_INLINE as u32 + 1;
        assert!(big_control.check_shape().is_err(), "a control frame's payload stays in the descriptor");
        let mut zero_method = request(flags::REQUEST);
        zero_method.method_id = 0;
        assert!(zero_method.check_shape().is_err());
        let mut err = request(flags::RESPONSE | flags::ERROR);
        assert!(err.check_shape().is_err(), "ERROR with status 0");
        err.status = Status::Internal.code();
        assert_eq!(err.check_shape(), Ok(FrameKind::Response { error: true }));
        let mut ctrl = request(flags::CONTROL);
        ctrl.method_id = ControlKind::Ping as u32;
        assert_eq!(ctrl.check_shape(), Ok(FrameKind::Control(ControlKind::Ping)));
        ctrl.method_id = 99;
        assert!(ctrl.check_shape().is_err());
    }

    #[test]
    fn hello_and_ready_round_trip_and_reject_garbage() {
        let h = Hello { major: 1, minor: 2, role: ROLE_CELL, epoch: 0x00ab_cdef, peer_id: 3, max_payload: 1 << 20 };
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        assert!(Hello::decode(&[0; 3]).is_err());

        let r = Ready {
            peer_id: 2,
            pid: 1234,
            name: "echo".into(),
            version: "0.1.0".into(),
            features: vec!["streams".into(), "log".into()],
        };
        let bytes = r.encode();
        assert_eq!(Ready::decode(&bytes), Ok(r));
        for cut in 0..bytes.len() {
            assert!(Ready::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Ready::decode(&extra).is_err());
        let short = LogEvent {
            level: log_level::WARN,
            target: "app.db".into(),
            message: "slow query".into(),
            ..Default::default()
        };
        // The short form (no timestamp, location or fields) is still a valid record.
        let short_body = BodyWriter::default().u32(log_level::WARN).str("app.db").str("slow query").finish();
        assert_eq!(LogEvent::decode(&short_body), Ok(short.clone()));
        let log = LogEvent {
            time_unix_ns: 1_764_633_600_123_456_789,
            file: "src/db.rs".into(),
            line: 42,
            fields: vec![("query_ms".into(), "830".into()), ("table".into(), "users".into())],
            ..short
        };
        let body = log.encode();
        assert_eq!(LogEvent::decode(&body), Ok(log.clone()));
        for cut in short_body.len() + 1..body.len() {
            assert!(LogEvent::decode(&body[..cut]).is_err(), "an extension cut at {cut} is malformed");
        }
        assert!(LogEvent::decode(&body[..7]).is_err());
        let mut too_many = BodyWriter::default();
        too_many.u32(3).str("").str("").u64(0).str("").u32(0).u32(MAX_LOG_FIELDS as u32 + 1);
        assert!(LogEvent::decode(&too_many.finish()).unwrap_err().contains("log fields"));
        let methods = vec![
            ("Echo.echo".to_string(), method_id("Echo.echo"), MethodKind::Unary),
            ("A.b".to_string(), 7, MethodKind::Bidi),
        ];
        let body = encode_methods(&methods);
        assert_eq!(decode_methods(&body), Ok(methods));
        assert!(decode_methods(&[255, 255, 255, 255]).is_err());
        let mut unknown_kind = body.clone();
        let last = unknown_kind.len() - 4;
        unknown_kind[last..].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(decode_methods(&unknown_kind), Err("unknown method kind 9 for \"A.b\"".to_string()));
        let mut huge_count = bytes[..bytes.len() - 1].to_vec();
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Ready::decode(&huge_count).is_err());
    }
}
