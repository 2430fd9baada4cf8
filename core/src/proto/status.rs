//! Who has the last word on a status, docs/PROTOCOL.md §"Status codes".
//!
//! Two rules hold on both sides of a call. Link-local statuses (PEER_DEAD,
//! SESSION_CLOSED, PROTOCOL_ERROR) describe a side's own link: a handler cannot answer
//! one (it is sent as INTERNAL), and one that arrives anyway is reported as INTERNAL,
//! so a caller's PEER_DEAD always means the peer is gone. And a call is only cancelled
//! by its caller: CANCELLED once the deadline passed, with no CANCEL from the caller,
//! is DEADLINE_EXCEEDED. Every other number, known here or not, passes unchanged.

use crate::wire::Status;

/// What becomes of a status on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Passed on as it is.
    Keep,
    /// Replaced by INTERNAL: the status was link-local.
    LinkLocal(Status),
    /// Replaced by DEADLINE_EXCEEDED: CANCELLED only because time ran out.
    Expired,
}

fn expired(deadline_ns: u64, now_ns: u64) -> bool {
    deadline_ns != 0 && now_ns >= deadline_ns
}

fn judge(code: u32, deadline_ns: u64, now_ns: u64, caller_cancelled: bool) -> Verdict {
    match Status::from_code(code) {
        Some(status) if status.is_link_local() => Verdict::LinkLocal(status),
        Some(Status::Cancelled) if expired(deadline_ns, now_ns) && !caller_cancelled => Verdict::Expired,
        _ => Verdict::Keep,
    }
}

/// The callee's rule for the status `code` a handler failed with, for a request with
/// `deadline_ns` (0: none) at `now_ns`, which its caller did or did not cancel.
pub(crate) fn outbound(code: u32, deadline_ns: u64, now_ns: u64, caller_cancelled: bool) -> Verdict {
    judge(code, deadline_ns, now_ns, caller_cancelled)
}

/// The caller's rule for the status `code` a response carried, for a call with
/// `deadline_ns` at `now_ns`. A blocking call is never cancelled by its caller (it
/// waits), so CANCELLED after its deadline is the deadline's doing.
pub(crate) fn inbound(code: u32, deadline_ns: u64, now_ns: u64) -> Verdict {
    judge(code, deadline_ns, now_ns, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_DEADLINE: u64 = 0;

    #[test]
    fn each_status_on_the_way_out() {
        let deadline = 1_000;
        let cases: &[(&str, u32, u64, u64, bool, Verdict)] = &[
            ("an ordinary error", Status::NotFound.code(), deadline, 10, false, Verdict::Keep),
            ("a number not in the table", 142, deadline, 10, false, Verdict::Keep),
            ("PEER_DEAD", 100, NO_DEADLINE, 10, false, Verdict::LinkLocal(Status::PeerDead)),
            ("SESSION_CLOSED", 101, NO_DEADLINE, 10, false, Verdict::LinkLocal(Status::SessionClosed)),
            ("PROTOCOL_ERROR", 103, NO_DEADLINE, 10, false, Verdict::LinkLocal(Status::ProtocolError)),
            ("HUB_FULL is not link-local", 104, NO_DEADLINE, 10, false, Verdict::Keep),
            ("CANCELLED before the deadline", 1, deadline, 999, false, Verdict::Keep),
            ("CANCELLED at the deadline", 1, deadline, 1_000, false, Verdict::Expired),
            ("CANCELLED after the deadline", 1, deadline, 5_000, false, Verdict::Expired),
            ("CANCELLED by the caller, after the deadline", 1, deadline, 5_000, true, Verdict::Keep),
            ("CANCELLED without a deadline", 1, NO_DEADLINE, u64::MAX, false, Verdict::Keep),
            ("DEADLINE_EXCEEDED", 4, deadline, 5_000, false, Verdict::Keep),
        ];
        for &(what, code, deadline_ns, now_ns, cancelled, expected) in cases {
            assert_eq!(outbound(code, deadline_ns, now_ns, cancelled), expected, "{what}");
        }
    }

    #[test]
    fn each_status_on_the_way_in() {
        let cases: &[(&str, u32, u64, u64, Verdict)] = &[
            ("an ordinary error", 5, 0, 10, Verdict::Keep),
            ("a relayed PEER_DEAD", 100, 0, 10, Verdict::LinkLocal(Status::PeerDead)),
            ("a relayed PROTOCOL_ERROR", 103, 0, 10, Verdict::LinkLocal(Status::ProtocolError)),
            ("CANCELLED after our deadline", 1, 100, 100, Verdict::Expired),
            ("CANCELLED before our deadline", 1, 100, 99, Verdict::Keep),
            ("a number from a newer table", 4_000_000, 0, 10, Verdict::Keep),
        ];
        for &(what, code, deadline_ns, now_ns, expected) in cases {
            assert_eq!(inbound(code, deadline_ns, now_ns), expected, "{what}");
        }
    }
}
