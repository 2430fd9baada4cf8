//! Streams, docs/PROTOCOL.md §16: opening a channel, and one stream's flow control.
//!
//! [`StreamFlow`] is the counting half of a stream: credit to send, DATA the peer may
//! still send, items the user holds and has released, and which side closed. The
//! runtime keeps the payloads and the waiting; it asks the flow what each frame means
//! and when to grant credit.

use crate::wire::StreamFrame;

/// DATA frames a side may have in flight per stream (its receive window), unless its
/// peer options say otherwise.
pub const STREAM_WINDOW: u32 = 8;

/// The largest receive window a side may grant per stream.
pub const MAX_STREAM_WINDOW: u32 = 1024;

/// What an OPEN of a channel comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenVerdict {
    Accept,
    /// The peer has as many streams open towards us as we allow: FINISH with
    /// RESOURCE_EXHAUSTED, in one attempt.
    Refuse,
    /// A channel of our own parity, or one already open: PROTOCOL_ERROR.
    Violation,
}

/// The callee's rule for an OPEN of `channel`: `our_parity` is the parity of the
/// channels we open (host odd, cell even), `inbound_open` how many streams the peer
/// already has open towards us, `max_inbound` how many we allow.
pub(crate) fn accept_open(
    channel: u32,
    our_parity: u32,
    already_open: bool,
    inbound_open: usize,
    max_inbound: usize,
) -> OpenVerdict {
    if channel == 0 || channel % 2 == our_parity || already_open {
        OpenVerdict::Violation
    } else if inbound_open >= max_inbound {
        OpenVerdict::Refuse
    } else {
        OpenVerdict::Accept
    }
}

/// What an arriving frame of an open stream is, once its credit is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// An item to queue for the user.
    Item,
    /// The peer sends no more items.
    PeerClosed,
    /// The peer gave up the stream.
    Cancelled,
    /// The callee's final status: the stream is over for both sides.
    Finished { error: bool },
    /// Only credit.
    Credit,
}

/// A frame of an open stream that breaks the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// DATA the receiver never granted credit for: ignoring it would let a peer queue
    /// items here without bound.
    DataBeyondCredit,
    /// OPEN on a channel that is already open.
    OpenOfOpenChannel,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Violation::DataBeyondCredit => "DATA beyond the granted credit",
            Violation::OpenOfOpenChannel => "OPEN of a channel already open",
        })
    }
}

/// One stream's flow control.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StreamFlow {
    /// DATA frames we may still send.
    send_credits: u32,
    /// DATA frames the peer may still send us (what we granted, minus what came).
    recv_allowance: u32,
    /// Items the user released and we have not granted back yet.
    released: u32,
    /// Items handed to the user and not yet released.
    held: u32,
    peer_eos: bool,
    local_eos: bool,
    /// Our receive window: DATA frames we let the peer have in flight.
    window: u32,
}

impl StreamFlow {
    /// A stream whose peer granted `send_credits` so far (the opener's window in its
    /// OPEN, or 0 for the opener, who waits for the callee's first CREDIT), with our
    /// receive window of `window` frames.
    pub(crate) fn new(send_credits: u32, window: u32) -> StreamFlow {
        StreamFlow { send_credits, window, ..StreamFlow::default() }
    }

    /// A frame arrived: its credit is ours to spend, then the frame itself counts.
    pub(crate) fn handle_frame(&mut self, kind: StreamFrame, credit: u32) -> Result<Arrival, Violation> {
        self.send_credits = self.send_credits.saturating_add(credit);
        Ok(match kind {
            StreamFrame::Data if self.recv_allowance == 0 => return Err(Violation::DataBeyondCredit),
            StreamFrame::Data => {
                self.recv_allowance -= 1;
                Arrival::Item
            }
            StreamFrame::Eos => {
                self.peer_eos = true;
                Arrival::PeerClosed
            }
            StreamFrame::Cancel => Arrival::Cancelled,
            StreamFrame::Finish { error } => Arrival::Finished { error },
            StreamFrame::Credit => Arrival::Credit,
            StreamFrame::Open => return Err(Violation::OpenOfOpenChannel),
        })
    }

    /// We are about to send `credit` to the peer: counted before it is sent, since the
    /// DATA it allows may arrive before the send returns.
    pub(crate) fn grant(&mut self, credit: u32) {
        self.recv_allowance = self.recv_allowance.saturating_add(credit);
    }

    /// A CREDIT counted with [`StreamFlow::grant`] could not be sent (the ring had no
    /// room): it is granted again before the user's next wait.
    pub(crate) fn grant_failed(&mut self, credit: u32) {
        self.recv_allowance = self.recv_allowance.saturating_sub(credit);
        self.released = self.released.saturating_add(credit);
    }

    /// A credit taken for a DATA frame that could not be sent (no room): spent later.
    pub(crate) fn return_send_credit(&mut self) {
        self.send_credits = self.send_credits.saturating_add(1);
    }

    /// Spends one credit for a DATA frame; false when there is none (the sender waits).
    pub(crate) fn take_send_credit(&mut self) -> bool {
        let had = self.send_credits > 0;
        self.send_credits -= u32::from(had);
        had
    }

    /// Closes our sending side; false if it was closed already.
    pub(crate) fn close_send(&mut self) -> bool {
        !std::mem::replace(&mut self.local_eos, true)
    }

    /// The EOS of [`StreamFlow::close_send`] could not be sent (no room): open again
    /// until it is.
    pub(crate) fn reopen_send(&mut self) {
        self.local_eos = false;
    }

    pub(crate) fn send_closed(&self) -> bool {
        self.local_eos
    }

    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_eos
    }

    /// An item went to the user.
    pub(crate) fn item_taken(&mut self) {
        self.held += 1;
    }

    /// The user released an item: returns the credit to grant now (batches of half the
    /// window, or at once when the peer has closed and nothing more will arrive), 0 to
    /// wait for more releases.
    pub(crate) fn item_released(&mut self) -> u32 {
        self.released += 1;
        self.held = self.held.saturating_sub(1);
        if self.released >= (self.window / 2).max(1) || self.peer_eos {
            std::mem::take(&mut self.released)
        } else {
            0
        }
    }

    /// The user is about to wait for an item: everything released so far must be
    /// granted first, or a sender waiting for that credit and we would wait on each other.
    pub(crate) fn grant_before_waiting(&mut self) -> u32 {
        std::mem::take(&mut self.released)
    }

    /// The user holds the whole window: no more can arrive until it releases some, so
    /// waiting would never end.
    pub(crate) fn holds_whole_window(&self) -> bool {
        self.held >= self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_and_eos_that_found_no_room_are_taken_back() {
        let mut flow = StreamFlow::new(1, 4);
        // A CREDIT that could not be sent: the peer may not send against it, and it is
        // granted again before the next wait.
        flow.grant(4);
        flow.grant_failed(4);
        assert_eq!(flow.handle_frame(StreamFrame::Data, 0), Err(Violation::DataBeyondCredit));
        assert_eq!(flow.grant_before_waiting(), 4);
        // A DATA that could not be sent gives its credit back.
        assert!(flow.take_send_credit());
        assert!(!flow.take_send_credit());
        flow.return_send_credit();
        assert!(flow.take_send_credit());
        // An EOS that could not be sent leaves the stream open for sending.
        assert!(flow.close_send());
        flow.reopen_send();
        assert!(!flow.send_closed() && flow.close_send());
    }

    #[test]
    fn opens_by_channel_parity_and_the_peers_stream_count() {
        let host = 1; // the host opens odd channels, so a cell's OPEN must be even
        let cases: &[(&str, u32, bool, usize, usize, OpenVerdict)] = &[
            ("a fresh even channel", 2, false, 0, 64, OpenVerdict::Accept),
            ("the last one allowed", 4, false, 63, 64, OpenVerdict::Accept),
            ("one more than allowed", 6, false, 64, 64, OpenVerdict::Refuse),
            ("a channel of the host's parity", 3, false, 0, 64, OpenVerdict::Violation),
            ("the unary channel", 0, false, 0, 64, OpenVerdict::Violation),
            ("a channel already open", 2, true, 1, 64, OpenVerdict::Violation),
            ("a channel already open, at the limit", 2, true, 64, 64, OpenVerdict::Violation),
        ];
        for &(what, channel, open, inbound, max, expected) in cases {
            assert_eq!(accept_open(channel, host, open, inbound, max), expected, "{what}");
        }
        assert_eq!(accept_open(3, 0, false, 0, 64), OpenVerdict::Accept, "a cell accepts odd channels");
    }

    #[test]
    fn each_frame_on_an_open_stream() {
        /// (what, frame, its credit, granted before, expected, send credit after)
        type Case = (&'static str, StreamFrame, u32, u32, Result<Arrival, Violation>, u32);
        let cases: &[Case] = &[
            ("DATA within credit", StreamFrame::Data, 0, 1, Ok(Arrival::Item), 0),
            ("DATA beyond credit", StreamFrame::Data, 0, 0, Err(Violation::DataBeyondCredit), 0),
            ("DATA carrying credit", StreamFrame::Data, 3, 1, Ok(Arrival::Item), 3),
            ("CREDIT", StreamFrame::Credit, 8, 0, Ok(Arrival::Credit), 8),
            ("EOS", StreamFrame::Eos, 0, 0, Ok(Arrival::PeerClosed), 0),
            ("CANCEL", StreamFrame::Cancel, 0, 0, Ok(Arrival::Cancelled), 0),
            ("FINISH", StreamFrame::Finish { error: false }, 0, 0, Ok(Arrival::Finished { error: false }), 0),
            ("FINISH with ERROR", StreamFrame::Finish { error: true }, 0, 0, Ok(Arrival::Finished { error: true }), 0),
            ("OPEN again", StreamFrame::Open, 0, 0, Err(Violation::OpenOfOpenChannel), 0),
        ];
        for &(what, kind, credit, granted, expected, credits_after) in cases {
            let mut flow = StreamFlow::new(0, STREAM_WINDOW);
            flow.grant(granted);
            assert_eq!(flow.handle_frame(kind, credit), expected, "{what}");
            let mut spent = 0;
            while flow.take_send_credit() {
                spent += 1;
            }
            assert_eq!(spent, credits_after, "{what}: credit to send after it");
        }
    }

    #[test]
    fn the_peer_never_sends_more_than_was_granted() {
        let mut flow = StreamFlow::new(0, STREAM_WINDOW);
        flow.grant(STREAM_WINDOW);
        for _ in 0..STREAM_WINDOW {
            assert_eq!(flow.handle_frame(StreamFrame::Data, 0), Ok(Arrival::Item));
        }
        assert_eq!(flow.handle_frame(StreamFrame::Data, 0), Err(Violation::DataBeyondCredit));
        flow.grant(1);
        assert_eq!(flow.handle_frame(StreamFrame::Data, 0), Ok(Arrival::Item));
    }

    #[test]
    fn credit_goes_back_in_half_windows_as_the_user_releases_items() {
        let mut flow = StreamFlow::new(0, STREAM_WINDOW);
        for _ in 0..STREAM_WINDOW {
            flow.item_taken();
        }
        assert!(flow.holds_whole_window());
        let grants: Vec<u32> = (0..STREAM_WINDOW).map(|_| flow.item_released()).collect();
        assert_eq!(grants, [0, 0, 0, 4, 0, 0, 0, 4]);
        assert!(!flow.holds_whole_window());
        flow.item_taken();
        assert_eq!(flow.item_released(), 0, "one release waits for its batch");
        assert_eq!(flow.grant_before_waiting(), 1, "but not once the user waits");
        assert_eq!(flow.grant_before_waiting(), 0);
    }

    #[test]
    fn once_the_peer_closed_each_release_is_granted_at_once() {
        let mut flow = StreamFlow::new(0, STREAM_WINDOW);
        flow.item_taken();
        assert_eq!(flow.handle_frame(StreamFrame::Eos, 0), Ok(Arrival::PeerClosed));
        assert!(flow.peer_closed());
        assert_eq!(flow.item_released(), 1);
    }

    #[test]
    fn sending_spends_credit_and_closes_once() {
        let mut flow = StreamFlow::new(2, STREAM_WINDOW);
        assert!(flow.take_send_credit() && flow.take_send_credit());
        assert!(!flow.take_send_credit(), "no credit: the sender waits");
        assert!(!flow.send_closed());
        assert!(flow.close_send());
        assert!(!flow.close_send(), "closed already");
        assert!(flow.send_closed());
    }

    #[test]
    fn a_larger_window_grants_in_halves_of_itself_and_fills_at_its_size() {
        let mut flow = StreamFlow::new(0, 32);
        for _ in 0..32 {
            flow.item_taken();
        }
        assert!(flow.holds_whole_window());
        let grants: Vec<u32> = (0..32).map(|_| flow.item_released()).collect();
        assert_eq!(grants.iter().filter(|g| **g != 0).copied().collect::<Vec<_>>(), vec![16, 16]);
        assert!(!flow.holds_whole_window());
    }
}
