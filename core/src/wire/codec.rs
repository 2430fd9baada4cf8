//! HELLO and the binary encoding of the built-in messages (lifecycle, log, introspection),
//! docs/PROTOCOL.md §10–§12. Decoders return an error on any input they cannot read.

use super::{MethodKind, DESCRIPTOR_INLINE};

/// Role announced in HELLO.
pub const ROLE_HOST: u8 = 1;
/// Role announced in HELLO.
pub const ROLE_CELL: u8 = 2;

/// The inline payload of HELLO / HELLO_ACK (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol major version.
    pub major: u16,
    /// Protocol minor version.
    pub minor: u16,
    /// [`ROLE_HOST`] or [`ROLE_CELL`].
    pub role: u8,
    /// The low 24 bits of the peer slot's epoch the sender joined at.
    pub epoch: u32,
    /// The sender's peer id (the cell's slot in the hub).
    pub peer_id: u32,
    /// Largest payload the sender can receive.
    pub max_payload: u32,
}

impl Hello {
    /// Encodes into the 16 inline bytes.
    pub fn encode(&self) -> [u8; DESCRIPTOR_INLINE] {
        let mut out = [0u8; DESCRIPTOR_INLINE];
        out[0..2].copy_from_slice(&self.major.to_le_bytes());
        out[2..4].copy_from_slice(&self.minor.to_le_bytes());
        out[4] = self.role;
        out[5..8].copy_from_slice(&self.epoch.to_le_bytes()[..3]);
        out[8..12].copy_from_slice(&self.peer_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.max_payload.to_le_bytes());
        out
    }

    /// Decodes the inline payload; it must be exactly 16 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Hello, String> {
        if bytes.len() != DESCRIPTOR_INLINE {
            return Err(format!("HELLO payload of {} bytes (expected 16)", bytes.len()));
        }
        Ok(Hello {
            major: u16::from_le_bytes([bytes[0], bytes[1]]),
            minor: u16::from_le_bytes([bytes[2], bytes[3]]),
            role: bytes[4],
            epoch: u32::from_le_bytes([bytes[5], bytes[6], bytes[7], 0]),
            peer_id: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            max_payload: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        })
    }
}

/// Names and ids of the built-in services.
pub mod builtin {
    use crate::wire::method_id;

    /// Cell → host, once the cell serves: [`super::Ready`].
    pub const LIFECYCLE_READY: &str = "cellshm.Lifecycle.ready";
    /// Cell → host: the cell is leaving on purpose (empty payload).
    pub const LIFECYCLE_GOODBYE: &str = "cellshm.Lifecycle.goodbye";
    /// Host → cell, empty both ways: answered from the threads that run the cell's
    /// handlers, so an answer means the cell can still serve (a supervisor's heartbeat).
    pub const LIFECYCLE_HEARTBEAT: &str = "cellshm.Lifecycle.heartbeat";
    /// Cell → host, NO_REPLY: a log record.
    pub const LOG_EVENT: &str = "cellshm.Log.event";
    /// Host → cell: a log filter string.
    pub const LOG_SET_FILTER: &str = "cellshm.Log.set_filter";
    /// Either way: the method names the callee serves.
    pub const INTROSPECT_METHODS: &str = "cellshm.Introspect.methods";
    /// Either way: the `.proto` descriptors of the services the callee serves, as one
    /// serialized `google.protobuf.FileDescriptorSet` (what gRPC reflection answers from).
    pub const INTROSPECT_DESCRIPTORS: &str = "cellshm.Introspect.descriptors";

    /// Cell → host: publish a topic whose memory the cell handed over on its doorbell.
    pub const TOPIC_CREATE: &str = "cellshm.Topic.create";
    /// Cell → host: subscribe to a topic with the subscription memory handed over.
    pub const TOPIC_SUBSCRIBE: &str = "cellshm.Topic.subscribe";
    /// Cell → host, NO_REPLY: end a subscription.
    pub const TOPIC_UNSUBSCRIBE: &str = "cellshm.Topic.unsubscribe";
    /// Cell → host, NO_REPLY: the cell closed a topic it published.
    pub const TOPIC_CLOSE: &str = "cellshm.Topic.close";
    /// Host → cell: attach a subscriber (its memory handed over) to a topic the cell publishes.
    pub const TOPIC_ATTACH: &str = "cellshm.Topic.attach";
    /// Host → cell, NO_REPLY: a subscriber of a topic the cell publishes left.
    pub const TOPIC_DETACH: &str = "cellshm.Topic.detach";
    /// Host → cell, NO_REPLY: a topic the cell subscribes to ended (its publisher died).
    pub const TOPIC_ENDED: &str = "cellshm.Topic.ended";

    /// Id of [`LIFECYCLE_READY`].
    pub const LIFECYCLE_READY_ID: u32 = method_id(LIFECYCLE_READY);
    /// Id of [`LIFECYCLE_GOODBYE`].
    pub const LIFECYCLE_GOODBYE_ID: u32 = method_id(LIFECYCLE_GOODBYE);
    /// Id of [`LIFECYCLE_HEARTBEAT`].
    pub const LIFECYCLE_HEARTBEAT_ID: u32 = method_id(LIFECYCLE_HEARTBEAT);
    /// Id of [`LOG_EVENT`].
    pub const LOG_EVENT_ID: u32 = method_id(LOG_EVENT);
    /// Id of [`LOG_SET_FILTER`].
    pub const LOG_SET_FILTER_ID: u32 = method_id(LOG_SET_FILTER);
    /// Id of [`INTROSPECT_METHODS`].
    pub const INTROSPECT_METHODS_ID: u32 = method_id(INTROSPECT_METHODS);
    /// Id of [`INTROSPECT_DESCRIPTORS`].
    pub const INTROSPECT_DESCRIPTORS_ID: u32 = method_id(INTROSPECT_DESCRIPTORS);

    /// Id of [`TOPIC_CREATE`].
    pub const TOPIC_CREATE_ID: u32 = method_id(TOPIC_CREATE);
    /// Id of [`TOPIC_SUBSCRIBE`].
    pub const TOPIC_SUBSCRIBE_ID: u32 = method_id(TOPIC_SUBSCRIBE);
    /// Id of [`TOPIC_UNSUBSCRIBE`].
    pub const TOPIC_UNSUBSCRIBE_ID: u32 = method_id(TOPIC_UNSUBSCRIBE);
    /// Id of [`TOPIC_CLOSE`].
    pub const TOPIC_CLOSE_ID: u32 = method_id(TOPIC_CLOSE);
    /// Id of [`TOPIC_ATTACH`].
    pub const TOPIC_ATTACH_ID: u32 = method_id(TOPIC_ATTACH);
    /// Id of [`TOPIC_DETACH`].
    pub const TOPIC_DETACH_ID: u32 = method_id(TOPIC_DETACH);
    /// Id of [`TOPIC_ENDED`].
    pub const TOPIC_ENDED_ID: u32 = method_id(TOPIC_ENDED);

    /// Every built-in method's name.
    pub const ALL: [&str; 14] = [
        LIFECYCLE_READY,
        LIFECYCLE_GOODBYE,
        LIFECYCLE_HEARTBEAT,
        LOG_EVENT,
        LOG_SET_FILTER,
        INTROSPECT_METHODS,
        INTROSPECT_DESCRIPTORS,
        TOPIC_CREATE,
        TOPIC_SUBSCRIBE,
        TOPIC_UNSUBSCRIBE,
        TOPIC_CLOSE,
        TOPIC_ATTACH,
        TOPIC_DETACH,
        TOPIC_ENDED,
    ];
}

/// Little-endian writer for built-in message bodies.
#[derive(Debug, Default)]
pub struct BodyWriter {
    buf: Vec<u8>,
}

impl BodyWriter {
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a u64 (little-endian, 8 bytes).
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a u32-length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends a u32 count followed by that many strings.
    pub fn str_list<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Self {
        self.u32(items.len() as u32);
        for s in items {
            self.str(s.as_ref());
        }
        self
    }

    /// The encoded bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Reader for built-in message bodies; every read is bounds-checked.
#[derive(Debug)]
pub struct BodyReader<'a> {
    rest: &'a [u8],
}

impl<'a> BodyReader<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        BodyReader { rest: bytes }
    }

    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, String> {
        if self.rest.len() < 4 {
            return Err("truncated: expected a u32".into());
        }
        let (head, tail) = self.rest.split_at(4);
        self.rest = tail;
        Ok(u32::from_le_bytes([head[0], head[1], head[2], head[3]]))
    }

    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, String> {
        let (low, high) = (self.u32()?, self.u32().map_err(|_| "truncated: expected a u64".to_string())?);
        Ok(u64::from(low) | u64::from(high) << 32)
    }

    /// The bytes not read yet (a payload that follows a header).
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads a u32-length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        if self.rest.len() < len {
            return Err(format!("truncated: string of {len} bytes, {} left", self.rest.len()));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        String::from_utf8(head.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    /// Reads a u32 count and that many strings.
    pub fn str_list(&mut self) -> Result<Vec<String>, String> {
        let count = self.u32()? as usize;
        // Each string needs at least its 4-byte length: refuse counts the input cannot hold.
        if count > self.rest.len() / 4 {
            return Err(format!("list of {count} strings in {} bytes", self.rest.len()));
        }
        (0..count).map(|_| self.str()).collect()
    }

    /// Fails if bytes are left over.
    pub fn finish(self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.rest.len()))
        }
    }
}

/// Body of `cellshm.Lifecycle.ready`:
/// `u32 peer_id, u32 pid, str name, str version, u32 n, n × str feature`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The cell's peer id.
    pub peer_id: u32,
    /// The cell's process id.
    pub pid: u32,
    /// The cell's name.
    pub name: String,
    /// The cell's own version string.
    pub version: String,
    /// Optional features the cell supports.
    pub features: Vec<String>,
}

impl Ready {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        BodyWriter::default()
            .u32(self.peer_id)
            .u32(self.pid)
            .str(&self.name)
            .str(&self.version)
            .str_list(&self.features)
            .finish()
    }

    /// Decodes a body received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Ready, String> {
        let mut r = BodyReader::new(bytes);
        let ready =
            Ready { peer_id: r.u32()?, pid: r.u32()?, name: r.str()?, version: r.str()?, features: r.str_list()? };
        r.finish()?;
        Ok(ready)
    }
}

/// Levels of [`LogEvent`], as in `tracing` (smaller = more severe).
#[allow(missing_docs)]
pub mod log_level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
    pub const TRACE: u32 = 5;
}

/// Structured fields a log record carries at most; a record with more is malformed.
pub const MAX_LOG_FIELDS: usize = 64;

/// Body of `cellshm.Log.event`: `u32 level, str target, str message`, then optionally
/// `u64 time_unix_ns, str file, u32 line, u32 n, n × (str key, str value)` (a body that
/// ends after the message has no timestamp, location or fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogEvent {
    /// One of [`log_level`]; other values are treated as INFO.
    pub level: u32,
    /// Where the record comes from (a logger name or module path); may be empty.
    pub target: String,
    /// The formatted message.
    pub message: String,
    /// When it was made: CLOCK_REALTIME in ns since the Unix epoch; 0 = not said (the
    /// host then stamps it on arrival).
    pub time_unix_ns: u64,
    /// The source file it was made in (may be empty).
    pub file: String,
    /// The line in `file` (0 = not said).
    pub line: u32,
    /// Structured fields, in the order given.
    pub fields: Vec<(String, String)>,
}

impl LogEvent {
    /// A record made now, without a location or fields.
    pub fn new(level: u32, target: &str, message: &str) -> LogEvent {
        LogEvent {
            level,
            target: target.into(),
            message: message.into(),
            time_unix_ns: unix_now_ns(),
            ..Default::default()
        }
    }

    /// Encodes the body (always with the extension).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = BodyWriter::default();
        w.u32(self.level).str(&self.target).str(&self.message);
        w.u64(self.time_unix_ns).str(&self.file).u32(self.line).u32(self.fields.len() as u32);
        for (key, value) in &self.fields {
            w.str(key).str(value);
        }
        w.finish()
    }

    /// Decodes a body received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<LogEvent, String> {
        let mut r = BodyReader::new(bytes);
        let mut event = LogEvent { level: r.u32()?, target: r.str()?, message: r.str()?, ..Default::default() };
        if r.is_empty() {
            return Ok(event);
        }
        event.time_unix_ns = r.u64()?;
        event.file = r.str()?;
        event.line = r.u32()?;
        let count = r.u32()? as usize;
        if count > MAX_LOG_FIELDS {
            return Err(format!("{count} log fields (at most {MAX_LOG_FIELDS})"));
        }
        for _ in 0..count {
            event.fields.push((r.str()?, r.str()?));
        }
        r.finish()?;
        Ok(event)
    }
}

/// CLOCK_REALTIME now, in ns since the Unix epoch (0 before 1970).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Body of the `cellshm.Introspect.methods` response: `u32 n, n × (str name, u32 id,
/// u32 kind)`.
pub fn encode_methods(methods: &[(String, u32, MethodKind)]) -> Vec<u8> {
    let mut w = BodyWriter::default();
    w.u32(methods.len() as u32);
    for (name, id, kind) in methods {
        w.str(name).u32(*id).u32(*kind as u32);
    }
    w.finish()
}

/// Decodes a `cellshm.Introspect.methods` response.
pub fn decode_methods(bytes: &[u8]) -> Result<Vec<(String, u32, MethodKind)>, String> {
    let mut r = BodyReader::new(bytes);
    let count = r.u32()? as usize;
    if count > bytes.len() / 12 {
        return Err(format!("{count} methods in {} bytes", bytes.len()));
    }
    let methods = (0..count)
        .map(|_| {
            let (name, id, code) = (r.str()?, r.u32()?, r.u32()?);
            let kind = MethodKind::from_code(code).ok_or_else(|| format!("unknown method kind {code} for {name:?}"))?;
            Ok((name, id, kind))
        })
        .collect::<Result<Vec<_>, String>>()?;
    r.finish()?;
    Ok(methods)
}
