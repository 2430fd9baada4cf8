//! One link's protocol state (docs/PROTOCOL.md §§9, 10, 16): the calls we wait on and
//! their deadlines, message ids, the table of open channels, the peer's HELLO and
//! GOODBYE, and the control frames we owe the peer.
//!
//! Plain state in the manner of quinn-proto: `&mut self`, time passed in, no syscalls,
//! threads or user code. The runtime hands it every frame it pops
//! ([`Link::handle_frame`]) and carries out the [`Inbound`] it returns; it tells it what
//! its callers do ([`Link::start_call`], [`Link::give_up`], [`Link::open_channel`],
//! [`Link::close_channel`], [`Link::fail`]); it asks [`Link::poll_timeout`] when the next
//! call of nobody's expires and [`Link::expire`] for it; and whenever its send ring has
//! room it sends what [`Link::poll_transmit`] hands out. Control answers (HELLO_ACK,
//! PONG, refusals, CANCEL) are never sent from the receive path: they are owed here, a
//! bounded number of them, so a peer that stops reading cannot make a receiver wait.
//!
//! `W` is the runtime's handle on a waiting caller, `S` its handle on an open stream;
//! the link only keeps and returns them.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::deadlines::{Deadlines, Timed};
use super::frames::{self, OutFrame, StreamHeader};
use super::stream::{accept_open, OpenVerdict};
use crate::error::Error;
use crate::shm::Side;
use crate::wire::{flags, ControlKind, Descriptor, FrameKind, Status, StreamFrame, CONTROL_CHANNEL, DESCRIPTOR_INLINE};

/// Control frames owed to the peer, at most. A peer that floods PINGs while it does not
/// read gets no PONG beyond these (its PINGs time out, as they should); a CANCEL or a
/// refusal beyond them is dropped (both are advisory: the peer's deadline still holds).
pub(crate) const MAX_OWED: usize = 64;

/// What a call waits for: each kind of answer comes only to its own kind of call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A RESPONSE (a unary call).
    Response,
    /// A HELLO_ACK (the cell's HELLO).
    HelloAck,
    /// A PONG (a PING).
    Pong,
}

/// Who notices a call's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Its caller waits for it and watches its own deadline.
    Caller,
    /// Nobody waits (a started call): the runtime asks [`Link::poll_timeout`] and
    /// [`Link::expire`].
    Link,
}

/// What passed its deadline ([`Link::expire`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expired<W, S> {
    /// A call nobody waits on, removed: fail it with DEADLINE_EXCEEDED.
    Call(W),
    /// A stream, still open: stop it (the end that opened it also cancels it).
    Stream(S),
    /// A call of the peer's that an async handler still serves (its msg id): wake the
    /// handler's cancel token.
    Served(u64),
}

/// What the runtime does with a frame it handed to [`Link::handle_frame`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound<W, S> {
    /// The answer to our call: complete `W` with this frame and its payload.
    Deliver(W),
    /// Nobody wants it (the answer to a call that gave up, a frame of a channel that is
    /// closed, a refused OPEN, a PING): drop its payload, which returns the slot.
    Discard,
    /// A request to serve (`no_reply`: a notification).
    Request { no_reply: bool },
    /// The cell's HELLO (host side): decide, then [`Link::answer_hello`] or fail.
    Hello,
    /// The peer cancelled its call with this msg id.
    Cancelled(u64),
    /// The peer is leaving on purpose.
    Goodbye,
    /// The peer opened this channel: make its stream and [`Link::accept_channel`].
    Open(u32),
    /// A frame of an open stream (a FINISH has closed the channel already).
    Stream(S, StreamFrame),
    /// The frame breaks the protocol: the link failed with this error.
    Violation(Error),
}

/// Hashes msg ids and channel ids as themselves: they are sequence numbers.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = v as u64;
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An open channel: its stream and the deadline the link watches for it (0: none).
struct Channel<S> {
    stream: S,
    deadline_ns: u64,
}

struct Outstanding<W> {
    waiter: W,
    answer: Answer,
    /// Set for calls with [`Timer::Link`] only.
    link_deadline_ns: u64,
}

/// Where the HELLO exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hello {
    /// Host: no HELLO yet. Cell: HELLO not acknowledged yet.
    Pending,
    /// Host: a HELLO arrived (a second one is a violation). Cell: HELLO_ACK arrived.
    Done,
}

/// The protocol state of one link.
pub(crate) struct Link<W, S> {
    side: Side,
    label: String,
    next_msg_id: u64,
    next_channel: u32,
    calls: IdMap<u64, Outstanding<W>>,
    /// Deadlines of the calls with [`Timer::Link`] and of every stream that has one.
    deadlines: Deadlines,
    channels: IdMap<u32, Channel<S>>,
    /// The peer's calls async handlers are serving, with their deadlines (0: none).
    serving: IdMap<u64, u64>,
    inbound_channels: usize,
    max_inbound_channels: usize,
    owed: VecDeque<Descriptor>,
    hello: Hello,
    failure: Option<Error>,
}

impl<W, S: Clone> Link<W, S> {
    /// The link of `side`, towards a peer described as `label` in errors, which may have
    /// `max_inbound_channels` streams open towards us at once.
    pub(crate) fn new(side: Side, label: impl Into<String>, max_inbound_channels: usize) -> Link<W, S> {
        Link {
            side,
            label: label.into(),
            next_msg_id: 1,
            // Each side opens channels of its own parity, so both can open at once.
            next_channel: match side {
                Side::Host => 1,
                Side::Cell => 2,
            },
            calls: IdMap::default(),
            deadlines: Deadlines::default(),
            channels: IdMap::default(),
            serving: IdMap::default(),
            inbound_channels: 0,
            max_inbound_channels,
            owed: VecDeque::new(),
            hello: Hello::Pending,
            failure: None,
        }
    }

    // ----- commands ------------------------------------------------------------------

    /// A fresh msg id for a frame that expects no answer (a notification, a stream frame).
    pub(crate) fn next_msg_id(&mut self) -> u64 {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        id
    }

    /// Registers a call that waits for `answer`, and returns its msg id. A call with a
    /// deadline and [`Timer::Link`] comes back from [`Link::expire`] once it passed.
    pub(crate) fn start_call(
        &mut self,
        waiter: W,
        answer: Answer,
        deadline_ns: u64,
        timer: Timer,
    ) -> Result<u64, Error> {
        self.check_open()?;
        let msg_id = self.next_msg_id();
        let link_deadline_ns = if timer == Timer::Link { deadline_ns } else { 0 };
        self.calls.insert(msg_id, Outstanding { waiter, answer, link_deadline_ns });
        if link_deadline_ns != 0 {
            self.watch(link_deadline_ns, Timed::Call(msg_id));
        }
        Ok(msg_id)
    }

    /// The caller gives up on `msg_id` (its deadline passed, it cancelled, its send
    /// failed): returns its waiter if the call was still outstanding. With `tell_peer`,
    /// a CANCEL is owed to the peer so that its handler may stop.
    pub(crate) fn give_up(&mut self, msg_id: u64, tell_peer: bool) -> Option<W> {
        let call = self.calls.remove(&msg_id)?;
        if tell_peer {
            self.owe(control_frame(ControlKind::Cancel, msg_id, &[]));
        }
        Some(call.waiter)
    }

    /// Whether `msg_id` still waits for its answer.
    #[cfg(test)]
    fn is_outstanding(&self, msg_id: u64) -> bool {
        self.calls.contains_key(&msg_id)
    }

    /// The earliest deadline the link watches (of a call nobody waits on, of a
    /// stream), if any.
    pub(crate) fn poll_timeout(&mut self) -> Option<u64> {
        let (calls, channels, serving) = (&self.calls, &self.channels, &self.serving);
        self.deadlines.earliest(|deadline, what| is_live(calls, channels, serving, deadline, what))
    }

    /// One call nobody else waits on or one stream whose deadline is `now` or earlier:
    /// the runtime fails the call with DEADLINE_EXCEEDED, or stops the stream. Call until
    /// it returns `None`.
    pub(crate) fn expire(&mut self, now_ns: u64) -> Option<Expired<W, S>> {
        let (calls, channels, serving) = (&self.calls, &self.channels, &self.serving);
        let due = self.deadlines.pop_due(now_ns, |deadline, what| is_live(calls, channels, serving, deadline, what))?;
        match due {
            Timed::Call(msg_id) => self.calls.remove(&msg_id).map(|call| Expired::Call(call.waiter)),
            Timed::Channel(channel) => self.channels.get(&channel).map(|c| Expired::Stream(c.stream.clone())),
            Timed::Served(msg_id) => self.serving.remove(&msg_id).map(|_| Expired::Served(msg_id)),
        }
    }

    /// An async handler serves the peer's call `msg_id`: its deadline (not 0) comes back
    /// from [`Link::expire`] unless [`Link::served`] came first.
    pub(crate) fn serving(&mut self, msg_id: u64, deadline_ns: u64) {
        if deadline_ns != 0 && self.failure.is_none() {
            self.serving.insert(msg_id, deadline_ns);
            self.watch(deadline_ns, Timed::Served(msg_id));
        }
    }

    /// The async handler of `msg_id` finished.
    pub(crate) fn served(&mut self, msg_id: u64) {
        self.serving.remove(&msg_id);
    }

    /// Watches `what` until `deadline_ns`.
    fn watch(&mut self, deadline_ns: u64, what: Timed) {
        let (calls, channels, serving) = (&self.calls, &self.channels, &self.serving);
        let live = calls.len() + channels.len() + serving.len();
        self.deadlines.watch(deadline_ns, what, live, || {
            let calls = calls.iter().map(|(id, c)| (c.link_deadline_ns, Timed::Call(*id)));
            let channels = channels.iter().map(|(id, c)| (c.deadline_ns, Timed::Channel(*id)));
            let serving = serving.iter().map(|(id, deadline)| (*deadline, Timed::Served(*id)));
            calls.chain(channels).chain(serving).filter(|(deadline, _)| *deadline != 0).collect()
        });
    }

    /// Streams open now, either way.
    pub(crate) fn open_channels(&self) -> usize {
        self.channels.len()
    }

    /// Opens a channel of our parity for the stream `make` builds for it; with a
    /// deadline (not 0), [`Link::expire`] hands the stream out once it passed.
    pub(crate) fn open_channel(&mut self, deadline_ns: u64, make: impl FnOnce(u32) -> S) -> Result<S, Error> {
        self.check_open()?;
        let mut channel = self.next_channel;
        while channel == CONTROL_CHANNEL || self.channels.contains_key(&channel) {
            // Wrapped around (channel 0 is the unary channel), or still open from the last
            // lap: the next one of our parity.
            channel = channel.wrapping_add(2);
        }
        self.next_channel = channel.wrapping_add(2);
        let stream = make(channel);
        self.channels.insert(channel, Channel { stream: stream.clone(), deadline_ns });
        if deadline_ns != 0 {
            self.watch(deadline_ns, Timed::Channel(channel));
        }
        Ok(stream)
    }

    /// Takes the peer's stream on `channel` (after [`Inbound::Open`]), whose deadline
    /// (not 0) the link then watches as for its own; refused once the link failed.
    pub(crate) fn accept_channel(&mut self, channel: u32, stream: S, deadline_ns: u64) -> Result<(), Error> {
        self.check_open()?;
        if self.channels.insert(channel, Channel { stream, deadline_ns }).is_none() {
            self.inbound_channels += 1;
        }
        if deadline_ns != 0 {
            self.watch(deadline_ns, Timed::Channel(channel));
        }
        Ok(())
    }

    /// The stream on `channel` is over for us: returns it if it was still open.
    pub(crate) fn close_channel(&mut self, channel: u32) -> Option<S> {
        let closed = self.channels.remove(&channel)?;
        if !self.is_ours(channel) {
            self.inbound_channels -= 1;
        }
        Some(closed.stream)
    }

    /// We give up our stream on `channel`: closes it, and (with `tell_peer`) owes the
    /// peer its CANCEL, sent when the ring has room: a cancel never waits. Returns the
    /// stream if it was still open (nothing is owed otherwise).
    pub(crate) fn cancel_channel(
        &mut self,
        channel: u32,
        method_id: u32,
        deadline_ns: u64,
        tell_peer: bool,
    ) -> Option<S> {
        let closed = self.close_channel(channel)?;
        if tell_peer {
            let header = StreamHeader { msg_id: self.next_msg_id(), channel, method_id, deadline_ns };
            let mut cancel = frames::stream(header, OutFrame::Cancel);
            set_inline(&mut cancel, &[]);
            self.owe(cancel);
        }
        Some(closed)
    }

    /// Answers the HELLO of `msg_id` with this HELLO_ACK payload.
    pub(crate) fn answer_hello(&mut self, msg_id: u64, ack: &[u8]) {
        // Owed even beyond the bound: there is one per link.
        self.owed.push_back(control_frame(ControlKind::HelloAck, msg_id, ack));
    }

    /// Owes the peer a RESPONSE (or stream FINISH) refusing `request` with `status` and a
    /// short message: for refusals decided on the receive path.
    pub(crate) fn refuse(&mut self, request: &Descriptor, status: Status, text: &str) {
        let mut d = Descriptor {
            msg_id: request.msg_id,
            channel_id: request.channel_id,
            method_id: request.method_id,
            flags: flags::RESPONSE | flags::ERROR,
            status: status.code(),
            ..Default::default()
        };
        if request.channel_id != CONTROL_CHANNEL {
            // A FINISH carries a msg id of its sender's own sequence.
            d.msg_id = self.next_msg_id();
        }
        set_inline(&mut d, text.as_bytes());
        self.owe(d);
    }

    /// The next frame owed to the peer, to send when its ring has room; one that could
    /// not be sent goes back with [`Link::retransmit_first`].
    pub(crate) fn poll_transmit(&mut self) -> Option<Descriptor> {
        self.owed.pop_front()
    }

    /// Puts back a frame from [`Link::poll_transmit`] that found the ring full.
    pub(crate) fn retransmit_first(&mut self, d: Descriptor) {
        self.owed.push_front(d);
    }

    /// Whether frames are owed to the peer.
    pub(crate) fn owes(&self) -> bool {
        !self.owed.is_empty()
    }

    /// The link is over: returns every waiting caller and open stream, to fail with
    /// `error`; later commands fail with it too.
    pub(crate) fn fail(&mut self, error: Error) -> (Vec<W>, Vec<S>) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        self.deadlines.clear();
        self.serving.clear();
        self.owed.clear();
        self.inbound_channels = 0;
        (self.calls.drain().map(|(_, c)| c.waiter).collect(), self.channels.drain().map(|(_, c)| c.stream).collect())
    }

    // ----- frames --------------------------------------------------------------------

    /// Decides what a frame the peer sent means. The payload stays with the runtime; the
    /// link only needs the descriptor.
    pub(crate) fn handle_frame(&mut self, d: &Descriptor) -> Inbound<W, S> {
        if self.failure.is_some() {
            return Inbound::Discard;
        }
        let kind = match d.check_shape() {
            Ok(kind) => kind,
            Err(m) => return self.violation(format!("bad descriptor (msg_id {}): {m}", d.msg_id)),
        };
        if self.side == Side::Host && self.hello == Hello::Pending && kind != FrameKind::Control(ControlKind::Hello) {
            // Nothing a cell sends counts before its HELLO proved which link it is on.
            return self.violation(format!("a frame before HELLO (msg_id {})", d.msg_id));
        }
        match kind {
            FrameKind::Request { no_reply } => Inbound::Request { no_reply },
            FrameKind::Response { .. } => self.answer(d.msg_id, Answer::Response),
            FrameKind::Control(kind) => self.handle_control(kind, d),
            FrameKind::Stream(frame) => self.handle_stream(frame, d),
        }
    }

    fn handle_control(&mut self, kind: ControlKind, d: &Descriptor) -> Inbound<W, S> {
        match kind {
            ControlKind::Hello => match (self.side, self.hello) {
                (Side::Cell, _) => self.violation("HELLO sent to a cell".into()),
                (Side::Host, Hello::Done) => self.violation("a second HELLO".into()),
                (Side::Host, Hello::Pending) => {
                    self.hello = Hello::Done;
                    Inbound::Hello
                }
            },
            ControlKind::HelloAck => match self.side {
                Side::Host => self.violation("HELLO_ACK sent to the host".into()),
                Side::Cell => {
                    let answer = self.answer(d.msg_id, Answer::HelloAck);
                    if matches!(answer, Inbound::Deliver(_)) {
                        self.hello = Hello::Done;
                    }
                    answer
                }
            },
            ControlKind::Ping => {
                self.owe(control_frame(ControlKind::Pong, d.msg_id, &[]));
                Inbound::Discard
            }
            ControlKind::Pong => self.answer(d.msg_id, Answer::Pong),
            ControlKind::Cancel => Inbound::Cancelled(d.msg_id),
            ControlKind::Goodbye => Inbound::Goodbye,
        }
    }

    /// The answer of kind `got` to our call `msg_id`.
    fn answer(&mut self, msg_id: u64, got: Answer) -> Inbound<W, S> {
        // One lookup on the hot path: taken out, and put back only to fail the link.
        match self.calls.remove(&msg_id) {
            // The call gave up already (deadline, cancel): a late answer is no violation.
            None => Inbound::Discard,
            Some(call) if call.answer == got => Inbound::Deliver(call.waiter),
            Some(call) => {
                let expected = call.answer;
                // Back in the table, so that failing the link fails its caller too.
                self.calls.insert(msg_id, call);
                self.violation(format!("answered msg_id {msg_id} with {got:?} where {expected:?} was due"))
            }
        }
    }

    fn handle_stream(&mut self, frame: StreamFrame, d: &Descriptor) -> Inbound<W, S> {
        let channel = d.channel_id;
        if frame == StreamFrame::Open {
            let our_parity = match self.side {
                Side::Host => 1,
                Side::Cell => 0,
            };
            let open = self.channels.contains_key(&channel);
            return match accept_open(channel, our_parity, open, self.inbound_channels, self.max_inbound_channels) {
                OpenVerdict::Accept => Inbound::Open(channel),
                OpenVerdict::Refuse => {
                    self.refuse(d, Status::ResourceExhausted, "too many streams");
                    Inbound::Discard
                }
                OpenVerdict::Violation if open => self.violation(format!("OPEN of channel {channel}, open already")),
                OpenVerdict::Violation => self.violation(format!("OPEN of channel {channel}, which it may not open")),
            };
        }
        let stream = match frame {
            // The callee's last word: the stream is over for both sides.
            StreamFrame::Finish { .. } => self.close_channel(channel),
            _ => self.channels.get(&channel).map(|c| c.stream.clone()),
        };
        match stream {
            Some(stream) => Inbound::Stream(stream, frame),
            // A late frame of a channel we closed (cancelled, finished, timed out).
            None => Inbound::Discard,
        }
    }

    // ----- helpers -------------------------------------------------------------------

    fn check_open(&self) -> Result<(), Error> {
        match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn is_ours(&self, channel: u32) -> bool {
        channel % 2 == self.next_channel % 2
    }

    fn owe(&mut self, d: Descriptor) {
        if self.owed.len() < MAX_OWED {
            self.owed.push_back(d);
        }
    }

    /// Fails the link: the peer broke the protocol.
    fn violation(&mut self, message: String) -> Inbound<W, S> {
        let error = Error::new(Status::ProtocolError, format!("{} broke the protocol: {message}", self.label));
        if self.failure.is_none() {
            self.failure = Some(error.clone());
        }
        Inbound::Violation(error)
    }
}

/// Whether a watched deadline still times something: a call still outstanding, or the
/// stream still open on its channel with that very deadline (a later stream on the
/// same channel has its own entry).
fn is_live<W, S>(
    calls: &IdMap<u64, Outstanding<W>>,
    channels: &IdMap<u32, Channel<S>>,
    serving: &IdMap<u64, u64>,
    deadline: u64,
    what: Timed,
) -> bool {
    match what {
        Timed::Call(msg_id) => calls.contains_key(&msg_id),
        Timed::Channel(channel) => channels.get(&channel).is_some_and(|c| c.deadline_ns == deadline),
        Timed::Served(msg_id) => serving.contains_key(&msg_id),
    }
}

/// A control frame of `kind` for `msg_id` with an inline payload.
fn control_frame(kind: ControlKind, msg_id: u64, payload: &[u8]) -> Descriptor {
    let mut d = Descriptor {
        msg_id,
        channel_id: CONTROL_CHANNEL,
        method_id: kind as u32,
        flags: flags::CONTROL,
        ..Default::default()
    };
    set_inline(&mut d, payload);
    d
}

/// Puts as much of `bytes` inline as fits.
fn set_inline(d: &mut Descriptor, bytes: &[u8]) {
    let n = bytes.len().min(DESCRIPTOR_INLINE);
    d.slot = crate::wire::SLOT_INLINE;
    d.inline[..n].copy_from_slice(&bytes[..n]);
    d.payload_len = n as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestLink = Link<&'static str, u32>;

    /// A host link whose cell has said HELLO.
    fn host() -> TestLink {
        let mut link = Link::new(Side::Host, "cell t", 2);
        assert_eq!(link.handle_frame(&control(ControlKind::Hello, 0)), Inbound::Hello);
        link
    }

    fn cell() -> TestLink {
        Link::new(Side::Cell, "the host", 2)
    }

    fn frame(flags: u32, msg_id: u64) -> Descriptor {
        Descriptor { msg_id, flags, slot: crate::wire::SLOT_INLINE, ..Default::default() }
    }

    fn request(msg_id: u64) -> Descriptor {
        Descriptor { method_id: 7, ..frame(flags::REQUEST, msg_id) }
    }

    fn response(msg_id: u64) -> Descriptor {
        Descriptor { method_id: 7, ..frame(flags::RESPONSE, msg_id) }
    }

    fn control(kind: ControlKind, msg_id: u64) -> Descriptor {
        control_frame(kind, msg_id, &[])
    }

    fn on_channel(channel: u32, flags: u32) -> Descriptor {
        Descriptor { channel_id: channel, method_id: 9, ..frame(flags, 100) }
    }

    fn is_violation(inbound: &Inbound<&'static str, u32>) -> bool {
        matches!(inbound, Inbound::Violation(e) if e.status() == Status::ProtocolError)
    }

    fn owed(link: &mut TestLink) -> Vec<Descriptor> {
        std::iter::from_fn(|| link.poll_transmit()).collect()
    }

    #[test]
    fn each_frame_on_channel_0() {
        // (what, side, frame, expected)
        type Case = (&'static str, Side, Descriptor, Inbound<&'static str, u32>);
        let cases: Vec<Case> = vec![
            ("a request", Side::Host, request(5), Inbound::Request { no_reply: false }),
            (
                "a notification",
                Side::Cell,
                Descriptor { method_id: 3, ..frame(flags::REQUEST | flags::NO_REPLY, 5) },
                { Inbound::Request { no_reply: true } },
            ),
            ("the answer to our call", Side::Host, response(1), Inbound::Deliver("call")),
            (
                "an error answer to our call",
                Side::Host,
                { Descriptor { status: Status::NotFound.code(), ..frame(flags::RESPONSE | flags::ERROR, 1) } },
                Inbound::Deliver("call"),
            ),
            ("the answer to a call that gave up", Side::Host, response(99), Inbound::Discard),
            ("CANCEL", Side::Cell, control(ControlKind::Cancel, 44), Inbound::Cancelled(44)),
            ("GOODBYE", Side::Cell, control(ControlKind::Goodbye, 0), Inbound::Goodbye),
            ("PING", Side::Host, control(ControlKind::Ping, 8), Inbound::Discard),
            ("the first HELLO", Side::Host, control(ControlKind::Hello, 3), Inbound::Hello),
            ("a late HELLO_ACK", Side::Cell, control(ControlKind::HelloAck, 99), Inbound::Discard),
        ];
        for (what, side, d, expected) in cases {
            let mut link = match (side, &expected) {
                (Side::Host, Inbound::Hello) => Link::new(side, "peer", 2),
                _ => link_for(side),
            };
            assert_eq!(link.start_call("call", Answer::Response, 0, Timer::Caller), Ok(1), "{what}");
            assert_eq!(link.handle_frame(&d), expected, "{what}");
        }
    }

    fn link_for(side: Side) -> TestLink {
        match side {
            Side::Host => host(),
            Side::Cell => cell(),
        }
    }

    #[test]
    fn each_protocol_error_fails_the_link() {
        let cases: Vec<(&str, Side, Descriptor)> = vec![
            ("unknown flag bits", Side::Host, frame(1 << 30, 1)),
            ("ERROR without a status", Side::Host, frame(flags::RESPONSE | flags::ERROR, 1)),
            ("a status without ERROR", Side::Host, Descriptor { status: 5, ..response(1) }),
            ("an inline payload too long", Side::Host, Descriptor { payload_len: 81, ..request(1) }),
            ("a request for method 0", Side::Host, frame(flags::REQUEST, 1)),
            ("credit on channel 0", Side::Host, Descriptor { credit: 1, ..request(1) }),
            ("stream flags on channel 0", Side::Host, frame(flags::DATA, 1)),
            ("an unknown control kind", Side::Host, Descriptor { method_id: 77, ..control(ControlKind::Ping, 1) }),
            ("a control frame with a slot", Side::Host, Descriptor { slot: 0, ..control(ControlKind::Ping, 1) }),
            ("HELLO to a cell", Side::Cell, control(ControlKind::Hello, 1)),
            ("HELLO_ACK to the host", Side::Host, control(ControlKind::HelloAck, 1)),
            ("a PONG answering a call", Side::Host, control(ControlKind::Pong, 1)),
            ("a response answering a PING", Side::Cell, response(2)),
            ("OPEN of our own parity (host)", Side::Host, on_channel(3, flags::REQUEST)),
            ("OPEN of our own parity (cell)", Side::Cell, on_channel(4, flags::REQUEST)),
            ("OPEN without a method", Side::Host, Descriptor { method_id: 0, ..on_channel(2, flags::REQUEST) }),
            ("a stream frame with neither flags nor credit", Side::Host, on_channel(2, 0)),
        ];
        for (what, side, d) in cases {
            let mut link = link_for(side);
            link.start_call("call", Answer::Response, 0, Timer::Caller).unwrap();
            link.start_call("ping", Answer::Pong, 0, Timer::Caller).unwrap();
            let got = link.handle_frame(&d);
            assert!(is_violation(&got), "{what}: {got:?}");
            assert!(link.start_call("next", Answer::Response, 0, Timer::Caller).is_err(), "{what}: still open");
            assert_eq!(link.handle_frame(&response(1)), Inbound::Discard, "{what}: frames after the failure");
            let (waiters, _) = link.fail(Error::new(Status::ProtocolError, "x"));
            assert_eq!(waiters.len(), 2, "{what}: the callers are still owed their failure");
        }
    }

    #[test]
    fn the_host_takes_nothing_before_hello() {
        let frames = [request(1), response(1), control(ControlKind::Ping, 1), on_channel(2, flags::REQUEST)];
        for d in frames {
            let mut link: TestLink = Link::new(Side::Host, "cell t", 2);
            assert!(is_violation(&link.handle_frame(&d)), "{d:?}");
        }
        let mut link: TestLink = Link::new(Side::Cell, "the host", 2);
        assert_eq!(link.handle_frame(&control(ControlKind::Ping, 1)), Inbound::Discard, "a cell may be pinged early");
    }

    #[test]
    fn the_host_takes_one_hello_and_owes_its_ack() {
        let mut link: TestLink = Link::new(Side::Host, "cell t", 2);
        assert_eq!(link.handle_frame(&control(ControlKind::Hello, 1)), Inbound::Hello);
        link.answer_hello(1, &[2, 0, 0, 0]);
        let ack = owed(&mut link);
        assert_eq!(ack.len(), 1);
        assert_eq!((ack[0].msg_id, ack[0].method_id, ack[0].flags), (1, ControlKind::HelloAck as u32, flags::CONTROL));
        assert_eq!(ack[0].check_shape(), Ok(FrameKind::Control(ControlKind::HelloAck)));
        assert!(is_violation(&link.handle_frame(&control(ControlKind::Hello, 2))), "a second HELLO");
    }

    #[test]
    fn the_cell_takes_its_hello_ack() {
        let mut link = cell();
        let id = link.start_call("hello", Answer::HelloAck, 0, Timer::Caller).unwrap();
        assert_eq!(link.handle_frame(&control(ControlKind::HelloAck, id)), Inbound::Deliver("hello"));
        assert_eq!(link.handle_frame(&control(ControlKind::HelloAck, id)), Inbound::Discard, "a repeat is late");
    }

    #[test]
    fn pings_are_answered_from_the_owed_frames_which_stay_bounded() {
        let mut link = host();
        for id in 0..(MAX_OWED as u64 + 10) {
            assert_eq!(link.handle_frame(&control(ControlKind::Ping, id)), Inbound::Discard);
        }
        let pongs = owed(&mut link);
        assert_eq!(pongs.len(), MAX_OWED, "a PING flood owes a bounded number of PONGs");
        assert!(pongs
            .iter()
            .enumerate()
            .all(|(i, d)| d.msg_id == i as u64 && d.check_shape() == Ok(FrameKind::Control(ControlKind::Pong))));
        assert!(!link.owes());
    }

    #[test]
    fn a_frame_that_found_the_ring_full_goes_out_first_next_time() {
        let mut link = host();
        link.handle_frame(&control(ControlKind::Ping, 1));
        link.handle_frame(&control(ControlKind::Ping, 2));
        let first = link.poll_transmit().unwrap();
        link.retransmit_first(first);
        assert_eq!(owed(&mut link).iter().map(|d| d.msg_id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn giving_up_removes_the_call_and_may_owe_a_cancel() {
        let mut link = host();
        let quiet = link.start_call("quiet", Answer::Response, 0, Timer::Caller).unwrap();
        let told = link.start_call("told", Answer::Response, 0, Timer::Caller).unwrap();
        assert_eq!(link.give_up(quiet, false), Some("quiet"));
        assert_eq!(link.give_up(quiet, false), None, "once");
        assert!(!link.owes());
        assert_eq!(link.give_up(told, true), Some("told"));
        let cancel = owed(&mut link);
        assert_eq!(cancel.len(), 1);
        assert_eq!((cancel[0].msg_id, cancel[0].check_shape()), (told, Ok(FrameKind::Control(ControlKind::Cancel))));
        assert_eq!(link.handle_frame(&response(told)), Inbound::Discard, "its late answer");
    }

    #[test]
    fn calls_nobody_waits_on_expire_in_deadline_order() {
        let mut link = host();
        assert_eq!(link.poll_timeout(), None);
        let late = link.start_call("late", Answer::Response, 300, Timer::Link).unwrap();
        let early = link.start_call("early", Answer::Response, 100, Timer::Link).unwrap();
        link.start_call("caller's own", Answer::Response, 50, Timer::Caller).unwrap();
        link.start_call("no deadline", Answer::Response, 0, Timer::Link).unwrap();
        assert_eq!(link.poll_timeout(), Some(100), "a caller's own deadline is its business");
        assert_eq!(link.expire(99), None);
        assert_eq!(link.expire(100), Some(Expired::Call("early")));
        assert_eq!(link.expire(100), None);
        assert_eq!(link.poll_timeout(), Some(300));
        assert!(!link.is_outstanding(early));
        assert_eq!(link.handle_frame(&response(late)), Inbound::Deliver("late"), "answered in time");
        assert_eq!(link.poll_timeout(), None, "an answered call has no deadline left");
        assert_eq!(link.expire(u64::MAX), None);
    }

    #[test]
    fn streams_with_a_deadline_expire_while_open_and_a_reused_channel_keeps_its_own() {
        let mut link = host();
        let ours = link.open_channel(100, |c| c).unwrap();
        assert_eq!(link.handle_frame(&on_channel(2, flags::REQUEST)), Inbound::Open(2));
        link.accept_channel(2, 2, 200).unwrap();
        link.open_channel(0, |c| c).unwrap();
        assert_eq!(link.poll_timeout(), Some(100), "a stream without a deadline is not watched");
        assert_eq!(link.expire(100), Some(Expired::Stream(ours)));
        assert_eq!(link.open_channels(), 3, "an expired stream stays open until the runtime closes it");
        assert_eq!(link.close_channel(ours), Some(ours));
        // The peer's stream closes early and its channel is opened again, later due.
        assert_eq!(link.close_channel(2), Some(2));
        assert_eq!(link.handle_frame(&on_channel(2, flags::REQUEST)), Inbound::Open(2));
        link.accept_channel(2, 22, 500).unwrap();
        assert_eq!(link.poll_timeout(), Some(500), "the closed stream's entry is stale");
        assert_eq!(link.expire(499), None);
        assert_eq!(link.expire(500), Some(Expired::Stream(22)));
        assert_eq!(link.expire(u64::MAX), None);
    }

    #[test]
    fn cancelling_our_stream_closes_it_and_owes_one_cancel_frame() {
        let mut link = host();
        let ours = link.open_channel(0, |c| c).unwrap();
        assert_eq!(link.cancel_channel(ours, 9, 77, true), Some(ours));
        let cancel = owed(&mut link);
        assert_eq!(cancel.len(), 1);
        assert_eq!(cancel[0].check_shape(), Ok(FrameKind::Stream(StreamFrame::Cancel)));
        assert_eq!((cancel[0].channel_id, cancel[0].method_id, cancel[0].deadline_ns), (ours, 9, 77));
        assert_eq!(link.cancel_channel(ours, 9, 77, true), None, "closed already: nothing more is owed");
        assert!(!link.owes());
        let quiet = link.open_channel(0, |c| c).unwrap();
        assert_eq!(link.cancel_channel(quiet, 9, 0, false), Some(quiet));
        assert!(!link.owes(), "a stream stopped by the peer is closed without a CANCEL");
    }

    #[test]
    fn the_deadline_heap_stays_bounded_by_the_calls_outstanding() {
        let mut link = host();
        for _ in 0..10_000 {
            let id = link.start_call("short-lived", Answer::Response, u64::MAX, Timer::Link).unwrap();
            assert_eq!(link.handle_frame(&response(id)), Inbound::Deliver("short-lived"));
        }
        assert!(link.deadlines.len() <= 2 * link.calls.len() + 65, "{} entries", link.deadlines.len());
        assert_eq!(link.poll_timeout(), None);
    }

    #[test]
    fn streams_open_by_parity_up_to_the_bound() {
        let mut link = host();
        assert_eq!(link.handle_frame(&on_channel(2, flags::REQUEST)), Inbound::Open(2));
        link.accept_channel(2, 20, 0).unwrap();
        assert_eq!(link.handle_frame(&on_channel(4, flags::REQUEST)), Inbound::Open(4));
        link.accept_channel(4, 40, 0).unwrap();
        assert!(!link.owes());
        assert_eq!(link.handle_frame(&on_channel(6, flags::REQUEST)), Inbound::Discard, "beyond the bound");
        let refusal = owed(&mut link);
        assert_eq!(refusal.len(), 1);
        assert_eq!(refusal[0].check_shape(), Ok(FrameKind::Stream(StreamFrame::Finish { error: true })));
        assert_eq!((refusal[0].channel_id, refusal[0].status), (6, Status::ResourceExhausted.code()));
        // Our own streams do not count against the peer's bound.
        assert_eq!(link.open_channel(0, |c| c * 10), Ok(10));
        assert_eq!(link.open_channel(0, |c| c * 10), Ok(30));
        assert_eq!(link.close_channel(2), Some(20));
        assert_eq!(link.handle_frame(&on_channel(6, flags::REQUEST)), Inbound::Open(6), "room again");
        assert!(is_violation(&link.handle_frame(&on_channel(4, flags::REQUEST))), "OPEN of an open channel");
    }

    #[test]
    fn stream_frames_reach_their_stream_and_finish_closes_it() {
        let mut link = cell();
        let ours = link.open_channel(0, |c| c).unwrap();
        assert_eq!(ours, 2);
        let credit = Descriptor { credit: 8, ..on_channel(2, 0) };
        assert_eq!(link.handle_frame(&credit), Inbound::Stream(2, StreamFrame::Credit));
        assert_eq!(link.handle_frame(&on_channel(2, flags::DATA)), Inbound::Stream(2, StreamFrame::Data));
        let finish = on_channel(2, flags::RESPONSE);
        assert_eq!(link.handle_frame(&finish), Inbound::Stream(2, StreamFrame::Finish { error: false }));
        assert_eq!(link.open_channels(), 0, "FINISH closed it");
        assert_eq!(link.handle_frame(&on_channel(2, flags::DATA)), Inbound::Discard, "a late frame");
        assert_eq!(link.handle_frame(&on_channel(8, flags::DATA)), Inbound::Discard, "a channel never opened");
    }

    #[test]
    fn channel_ids_skip_zero_and_channels_still_open() {
        let mut link = cell();
        link.next_channel = u32::MAX - 1;
        assert_eq!(link.open_channel(0, |c| c), Ok(u32::MAX - 1));
        assert_eq!(link.open_channel(0, |c| c), Ok(2), "0 is skipped on the wrap");
        let mut link = host();
        link.next_channel = u32::MAX;
        assert_eq!(link.open_channel(0, |c| c), Ok(u32::MAX));
        assert_eq!(link.open_channel(0, |c| c), Ok(1));
        link.next_channel = u32::MAX;
        assert_eq!(link.open_channel(0, |c| c), Ok(3), "skips the channels still open");
    }

    #[test]
    fn failing_returns_every_caller_and_stream_once() {
        let mut link = host();
        link.start_call("a", Answer::Response, 0, Timer::Caller).unwrap();
        link.start_call("b", Answer::Response, 10, Timer::Link).unwrap();
        link.open_channel(0, |c| c).unwrap();
        link.handle_frame(&control(ControlKind::Ping, 1));
        let (mut waiters, streams) = link.fail(Error::new(Status::PeerDead, "gone"));
        waiters.sort();
        assert_eq!((waiters, streams), (vec!["a", "b"], vec![1]));
        assert!(!link.owes(), "nothing is owed to a dead peer");
        assert_eq!(link.poll_timeout(), None);
        assert_eq!(link.start_call("c", Answer::Response, 0, Timer::Caller).unwrap_err().status(), Status::PeerDead);
        assert_eq!(link.open_channel(0, |c| c).unwrap_err().status(), Status::PeerDead);
        assert_eq!(link.fail(Error::new(Status::Internal, "again")), (vec![], vec![]));
    }
}
