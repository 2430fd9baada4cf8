//! The frames this side sends, built by plain functions: which flags each kind of frame
//! has and which fields it carries (docs/PROTOCOL.md §6, §8, §9), in one place with a
//! table test. The runtime fills in only what it learns when it sends: the payload (its
//! length, slot or inline bytes) and, where the link assigns it, the msg id.

use crate::wire::{flags, ControlKind, Descriptor, CONTROL_CHANNEL};

/// A unary request of `method_id` that wants an answer before `deadline_ns` (0: none).
/// The link gives it its msg id when it registers the call.
pub(crate) fn request(method_id: u32, deadline_ns: u64) -> Descriptor {
    Descriptor { method_id, flags: flags::REQUEST, deadline_ns, ..Default::default() }
}

/// A notification: a request that wants no reply, with msg id `msg_id`; the receiver
/// drops it unserved once `deadline_ns` (0: none) has passed.
pub(crate) fn notification(msg_id: u64, method_id: u32, deadline_ns: u64) -> Descriptor {
    Descriptor { msg_id, method_id, flags: flags::REQUEST | flags::NO_REPLY, deadline_ns, ..Default::default() }
}

/// The answer to a request: OK, or the error `status` (a code; its text is the payload).
pub(crate) fn response(request: &Descriptor, error: Option<u32>) -> Descriptor {
    let mut d = Descriptor {
        msg_id: request.msg_id,
        method_id: request.method_id,
        flags: flags::RESPONSE,
        ..Default::default()
    };
    if let Some(status) = error {
        d.flags |= flags::ERROR;
        d.status = status;
    }
    d
}

/// A control frame of `kind` on the control channel.
pub(crate) fn control(msg_id: u64, kind: ControlKind) -> Descriptor {
    Descriptor {
        msg_id,
        channel_id: CONTROL_CHANNEL,
        method_id: kind as u32,
        flags: flags::CONTROL,
        ..Default::default()
    }
}

/// What every frame of one stream carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamHeader {
    /// A fresh msg id per frame.
    pub(crate) msg_id: u64,
    pub(crate) channel: u32,
    pub(crate) method_id: u32,
    pub(crate) deadline_ns: u64,
}

/// The kinds of stream frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutFrame {
    /// The opener's first frame: the opening message, and the window it grants.
    Open { window: u32 },
    /// One item.
    Data,
    /// Credit only: `credit` more items may be sent to us.
    Credit(u32),
    /// No more items from this side.
    Eos,
    /// The opener gives up: the handler sees its stream cancelled; nothing follows.
    Cancel,
    /// The handler's end: OK with its final response, or the error `status` (a code).
    Finish { error: Option<u32> },
}

/// A frame of a stream.
pub(crate) fn stream(header: StreamHeader, kind: OutFrame) -> Descriptor {
    let (flags, credit, status) = match kind {
        OutFrame::Open { window } => (flags::REQUEST, window, 0),
        OutFrame::Data => (flags::DATA, 0, 0),
        OutFrame::Credit(credit) => (0, credit, 0),
        OutFrame::Eos => (flags::EOS, 0, 0),
        OutFrame::Cancel => (flags::CANCEL, 0, 0),
        OutFrame::Finish { error: None } => (flags::RESPONSE, 0, 0),
        OutFrame::Finish { error: Some(status) } => (flags::RESPONSE | flags::ERROR, 0, status),
    };
    Descriptor {
        msg_id: header.msg_id,
        channel_id: header.channel,
        method_id: header.method_id,
        flags,
        status,
        credit,
        deadline_ns: header.deadline_ns,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    /// (flags, status, credit, channel, msg id, method id, deadline) of a frame.
    type Fields = (u32, u32, u32, u32, u64, u32, u64);

    fn fields(d: &Descriptor) -> Fields {
        (d.flags, d.status, d.credit, d.channel_id, d.msg_id, d.method_id, d.deadline_ns)
    }

    #[test]
    fn unary_and_control_frames_carry_what_the_protocol_says() {
        use flags::*;
        let req = Descriptor { msg_id: 9, method_id: 77, deadline_ns: 5, ..request(77, 5) };
        let table: [(&str, Descriptor, Fields); 6] = [
            ("request: msg id from the link", request(77, 1_000), (REQUEST, 0, 0, 0, 0, 77, 1_000)),
            ("request without deadline", request(77, 0), (REQUEST, 0, 0, 0, 0, 77, 0)),
            ("notification: no reply", notification(4, 77, 1_000), (REQUEST | NO_REPLY, 0, 0, 0, 4, 77, 1_000)),
            ("OK response: the request's msg and method", response(&req, None), (RESPONSE, 0, 0, 0, 9, 77, 0)),
            (
                "error response: its status",
                response(&req, Some(Status::NotFound as u32)),
                (RESPONSE | ERROR, 5, 0, 0, 9, 77, 0),
            ),
            ("PING", control(3, ControlKind::Ping), (CONTROL, 0, 0, CONTROL_CHANNEL, 3, ControlKind::Ping as u32, 0)),
        ];
        for (what, d, expected) in table {
            assert_eq!(fields(&d), expected, "{what}");
            assert_eq!(d.flags & !KNOWN, 0, "{what}: only known flags");
            assert!(d.check_shape().is_ok() || d.flags & CONTROL != 0, "{what}: {:?}", d.check_shape());
        }
    }

    #[test]
    fn stream_frames_carry_the_header_and_their_kinds_flags_credit_and_status() {
        use flags::*;
        let h = StreamHeader { msg_id: 12, channel: 3, method_id: 88, deadline_ns: 400 };
        let table = [
            (OutFrame::Open { window: 8 }, (REQUEST, 0, 8)),
            (OutFrame::Data, (DATA, 0, 0)),
            (OutFrame::Credit(5), (0, 0, 5)),
            (OutFrame::Eos, (EOS, 0, 0)),
            (OutFrame::Cancel, (CANCEL, 0, 0)),
            (OutFrame::Finish { error: None }, (RESPONSE, 0, 0)),
            (OutFrame::Finish { error: Some(Status::Aborted as u32) }, (RESPONSE | ERROR, 10, 0)),
        ];
        for (kind, (flags, status, credit)) in table {
            let d = stream(h, kind);
            assert_eq!(fields(&d), (flags, status, credit, 3, 12, 88, 400), "{kind:?}");
        }
    }
}
