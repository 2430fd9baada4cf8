//! `cellshm.Topic.*` (PROTOCOL.md §19): publish/subscribe brokered by the host. A topic's
//! memory and a subscription's memory travel as descriptors handed over on the doorbell
//! just before the call that names their token; these are the calls' bodies, and what
//! each side does with them (`host/topics.rs`, `cell/topics.rs`).
//!
//! - cell → host `create`: str name, u32 sample size, u32 depth, u32 history, u32 max
//!   subscribers, u32 max borrowed, u64 token of the topic's memory (read-only);
//! - cell → host `subscribe`: str name, u32 policy, u32 n, u64 token of the subscription's
//!   memory; answers u32 index, u64 start, u64 token of the topic's memory;
//! - cell → host `unsubscribe` (no reply): str name, u32 index, u64 start;
//! - cell → host `close` (no reply): str name: the cell closed a topic it published;
//! - host → cell `attach`: str name, u32 policy, u32 n, u64 token of a subscription's
//!   memory; answers u32 index, u64 start;
//! - host → cell `detach` (no reply): str name, u32 index, u64 start;
//! - host → cell `ended` (no reply): str name: its publisher is gone.

use crate::error::{Error, Result};
use crate::proto::topic::TopicPolicy;
use crate::runtime::topic::TopicOptions;
use crate::shm::SharedBytes;
use crate::wire::{BodyReader, BodyWriter};

use super::bad;

/// A cell publishes a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Create {
    pub name: String,
    pub options: TopicOptions,
    pub token: u64,
}

/// A subscription asked for (cell → host) or to attach (host → cell).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscribe {
    pub name: String,
    pub policy: TopicPolicy,
    pub token: u64,
}

/// Where a subscription starts: its index among the topic's subscribers and its first
/// queue position; the token of the topic's memory (host → subscriber only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Subscribed {
    pub index: u32,
    pub start: u64,
    pub token: u64,
}

/// A subscription ends (`unsubscribe`, `detach`): the one at `index` that started at
/// `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leave {
    pub name: String,
    pub index: u32,
    pub start: u64,
}

fn read(payload: SharedBytes<'_>) -> Vec<u8> {
    payload.to_vec()
}

impl Create {
    pub fn encode(&self) -> Vec<u8> {
        let o = &self.options;
        BodyWriter::default()
            .str(&self.name)
            .u32(o.sample_size)
            .u32(o.depth)
            .u32(o.history)
            .u32(o.max_subscribers)
            .u32(o.max_borrowed)
            .u64(self.token)
            .finish()
    }

    pub fn decode(payload: SharedBytes<'_>) -> Result<Create> {
        let body = read(payload);
        let mut r = BodyReader::new(&body);
        let parse = |r: &mut BodyReader<'_>| -> std::result::Result<Create, String> {
            let name = r.str()?;
            let options = TopicOptions {
                sample_size: r.u32()?,
                depth: r.u32()?,
                history: r.u32()?,
                max_subscribers: r.u32()?,
                max_borrowed: r.u32()?,
            };
            Ok(Create { name, options, token: r.u64()? })
        };
        parse(&mut r).map_err(|m| bad("topic create", m))
    }
}

impl Subscribe {
    pub fn encode(&self) -> Vec<u8> {
        let (code, n) = self.policy.code();
        BodyWriter::default().str(&self.name).u32(code).u32(n).u64(self.token).finish()
    }

    pub fn decode(payload: SharedBytes<'_>) -> Result<Subscribe> {
        let body = read(payload);
        let mut r = BodyReader::new(&body);
        let parse = |r: &mut BodyReader<'_>| -> std::result::Result<Subscribe, String> {
            let name = r.str()?;
            let (code, n) = (r.u32()?, r.u32()?);
            let policy = TopicPolicy::from_code(code, n).ok_or_else(|| format!("policy code {code}"))?;
            Ok(Subscribe { name, policy, token: r.u64()? })
        };
        parse(&mut r).map_err(|m| bad("topic subscription", m))
    }
}

impl Subscribed {
    pub fn encode(&self) -> Vec<u8> {
        BodyWriter::default().u32(self.index).u64(self.start).u64(self.token).finish()
    }

    pub fn decode(body: &[u8]) -> Result<Subscribed> {
        let mut r = BodyReader::new(body);
        let parse = |r: &mut BodyReader<'_>| -> std::result::Result<Subscribed, String> {
            Ok(Subscribed { index: r.u32()?, start: r.u64()?, token: r.u64()? })
        };
        parse(&mut r)
            .map_err(|m| Error::new(crate::Status::ProtocolError, format!("bad topic subscription answer: {m}")))
    }
}

impl Leave {
    pub fn encode(&self) -> Vec<u8> {
        BodyWriter::default().str(&self.name).u32(self.index).u64(self.start).finish()
    }

    pub fn decode(payload: SharedBytes<'_>) -> Result<Leave> {
        let body = read(payload);
        let mut r = BodyReader::new(&body);
        let parse = |r: &mut BodyReader<'_>| -> std::result::Result<Leave, String> {
            Ok(Leave { name: r.str()?, index: r.u32()?, start: r.u64()? })
        };
        parse(&mut r).map_err(|m| bad("topic leave", m))
    }
}

/// `ended`'s and `close`'s body: the topic's name.
pub(crate) fn encode_name(name: &str) -> Vec<u8> {
    BodyWriter::default().str(name).finish()
}

pub(crate) fn decode_name(payload: SharedBytes<'_>) -> Result<String> {
    let body = read(payload);
    BodyReader::new(&body).str().map_err(|m| bad("topic name", m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_message_reads_back_and_garbage_is_refused() {
        let create = Create { name: "frames".into(), options: TopicOptions::default(), token: 7 };
        assert_eq!(Create::decode(SharedBytes::private(&create.encode())).unwrap(), create);
        let subscribe = Subscribe { name: "frames".into(), policy: TopicPolicy::DisconnectAfter(3), token: 9 };
        assert_eq!(Subscribe::decode(SharedBytes::private(&subscribe.encode())).unwrap(), subscribe);
        let subscribed = Subscribed { index: 2, start: 40, token: 11 };
        assert_eq!(Subscribed::decode(&subscribed.encode()).unwrap(), subscribed);
        let leave = Leave { name: "frames".into(), index: 1, start: 12 };
        assert_eq!(Leave::decode(SharedBytes::private(&leave.encode())).unwrap(), leave);
        assert_eq!(decode_name(SharedBytes::private(&encode_name("frames"))).unwrap(), "frames");
        let mut bad_policy = subscribe.encode();
        let at = 4 + "frames".len();
        bad_policy[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
        assert!(Subscribe::decode(SharedBytes::private(&bad_policy)).is_err());
        assert!(Create::decode(SharedBytes::private(b"\xff\xff")).is_err());
        assert!(Subscribed::decode(b"").is_err());
    }
}
