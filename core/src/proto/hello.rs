//! HELLO (cell → host) and HELLO_ACK (host → cell), docs/PROTOCOL.md §"Handshake".
//!
//! Both name the link they are for (peer id and the low 24 bits of the slot's epoch)
//! and the sender's role; the major version must match exactly. A HELLO the host cannot
//! accept is a protocol error (the link is dropped, its slot reusable at once); a
//! HELLO_ACK the cell cannot accept ends the join with the reason.

use crate::wire::{Hello, PROTOCOL_VERSION_MAJOR, PROTOCOL_VERSION_MINOR, ROLE_CELL, ROLE_HOST};

/// The link a handshake is for, as the join record gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkId {
    pub peer_id: u32,
    /// The slot's full epoch; HELLO carries its low 24 bits.
    pub epoch: u32,
}

impl LinkId {
    fn wire_epoch(self) -> u32 {
        self.epoch & 0x00ff_ffff
    }
}

/// Why a HELLO or HELLO_ACK was refused: the text of the error that ends the link.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Major { major: u16, minor: u16 },
    Epoch { got: u32, expected: u32 },
    Link { role: u8, peer_id: u32 },
}

impl Refusal {
    /// The message, naming what the other side said and what this side expected.
    pub(crate) fn describe(&self, link: LinkId, other: &str) -> String {
        match self {
            Refusal::Major { major, minor } => {
                format!("{other} speaks protocol {major}.{minor}, this side {PROTOCOL_VERSION_MAJOR}.x")
            }
            Refusal::Epoch { got, expected } => format!(
                "handshake for epoch {got} of peer slot {}, which is at epoch {expected} ({})",
                link.peer_id, link.epoch
            ),
            Refusal::Link { role, peer_id } => {
                format!("handshake for peer {peer_id} with role {role} on the link of peer {}", link.peer_id)
            }
        }
    }
}

fn check(hello: &Hello, link: LinkId, role: u8) -> Result<(), Refusal> {
    if hello.major != PROTOCOL_VERSION_MAJOR {
        return Err(Refusal::Major { major: hello.major, minor: hello.minor });
    }
    if hello.epoch != link.wire_epoch() {
        return Err(Refusal::Epoch { got: hello.epoch, expected: link.wire_epoch() });
    }
    if hello.role != role || hello.peer_id != link.peer_id {
        return Err(Refusal::Link { role: hello.role, peer_id: hello.peer_id });
    }
    Ok(())
}

/// The HELLO a cell sends on `link`, announcing `minor` and the largest payload it can
/// receive.
pub(crate) fn cell_hello(link: LinkId, minor: u16, max_payload: u32) -> Hello {
    Hello {
        major: PROTOCOL_VERSION_MAJOR,
        minor,
        role: ROLE_CELL,
        epoch: link.wire_epoch(),
        peer_id: link.peer_id,
        max_payload,
    }
}

/// The host's check of a cell's HELLO on `link`.
pub(crate) fn host_accepts(link: LinkId, hello: &Hello) -> Result<(), Refusal> {
    check(hello, link, ROLE_CELL)
}

/// The HELLO_ACK the host answers an accepted HELLO with.
pub(crate) fn host_ack(link: LinkId, max_payload: u32) -> Hello {
    Hello {
        major: PROTOCOL_VERSION_MAJOR,
        minor: PROTOCOL_VERSION_MINOR,
        role: ROLE_HOST,
        epoch: link.wire_epoch(),
        peer_id: link.peer_id,
        max_payload,
    }
}

/// The cell's check of the host's HELLO_ACK: the host's role, our major version, and
/// our own link echoed back (an answer meant for another link is not ours).
pub(crate) fn cell_accepts_ack(link: LinkId, ack: &Hello) -> Result<(), Refusal> {
    check(ack, link, ROLE_HOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: LinkId = LinkId { peer_id: 3, epoch: 0x0100_0007 };

    #[test]
    fn the_host_accepts_exactly_a_cell_hello_for_its_link() {
        let good = cell_hello(LINK, 0, 4096);
        assert_eq!(good.epoch, 7, "the epoch travels as its low 24 bits");
        let newer_minor = Hello { minor: 9, ..good };
        let cases: &[(&str, Hello, Result<(), Refusal>)] = &[
            ("as sent", good, Ok(())),
            ("a newer minor", newer_minor, Ok(())),
            ("another major", Hello { major: 1, minor: 4, ..good }, Err(Refusal::Major { major: 1, minor: 4 })),
            ("an old epoch", Hello { epoch: 6, ..good }, Err(Refusal::Epoch { got: 6, expected: 7 })),
            (
                "the full epoch",
                Hello { epoch: LINK.epoch, ..good },
                Err(Refusal::Epoch { got: LINK.epoch, expected: 7 }),
            ),
            ("another peer", Hello { peer_id: 4, ..good }, Err(Refusal::Link { role: ROLE_CELL, peer_id: 4 })),
            ("the host's role", Hello { role: ROLE_HOST, ..good }, Err(Refusal::Link { role: ROLE_HOST, peer_id: 3 })),
            ("no role", Hello { role: 0, ..good }, Err(Refusal::Link { role: 0, peer_id: 3 })),
        ];
        for (what, hello, expected) in cases {
            assert_eq!(&host_accepts(LINK, hello), expected, "{what}");
        }
    }

    #[test]
    fn the_cell_accepts_exactly_the_hosts_ack_for_its_own_link() {
        let ack = host_ack(LINK, 1 << 20);
        assert_eq!((ack.role, ack.epoch, ack.peer_id), (ROLE_HOST, 7, 3));
        let cases: &[(&str, Hello, bool)] = &[
            ("as sent", ack, true),
            ("another major", Hello { major: 3, ..ack }, false),
            ("a cell's role", Hello { role: ROLE_CELL, ..ack }, false),
            ("another link's epoch", Hello { epoch: 8, ..ack }, false),
            ("another link's peer", Hello { peer_id: 0, ..ack }, false),
        ];
        for (what, hello, accepted) in cases {
            assert_eq!(cell_accepts_ack(LINK, hello).is_ok(), *accepted, "{what}");
        }
    }

    #[test]
    fn refusals_name_what_was_said_and_what_was_expected() {
        let text = Refusal::Epoch { got: 6, expected: 7 }.describe(LINK, "cell w");
        assert!(text.contains("epoch 6") && text.contains("epoch 7"), "{text}");
        let text = Refusal::Major { major: 1, minor: 4 }.describe(LINK, "cell w");
        assert!(text.starts_with("cell w speaks protocol 1.4"), "{text}");
    }
}
