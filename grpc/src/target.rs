//! Where the gateway sends a call: a cell of the host's own hub (in-process, a `Peer`),
//! or a cell of another process's hub, through that host's relay (`cellshm.Relay.*`,
//! `Hub::enable_relay`) over the link the gateway attached with.

use std::sync::Arc;
use std::time::Duration;

use cellshm::host::relay::{Routed, CALL, PEERS, STREAM};
use cellshm::wire::BodyReader;
use cellshm::{
    AsyncStream, CallOptions, Cell, Error, HubView, LinkEnd, Peer, PeerIdentity, PeerState, Response, Status,
};

/// The cells a gateway serves: the host's own hub, or another's through its relay.
#[derive(Clone)]
pub(crate) enum Source {
    Hub(HubView),
    Relay(Arc<Cell>),
}

/// One ready cell to call.
#[derive(Clone)]
pub(crate) enum Target {
    Peer(Peer),
    Relayed { relay: Arc<Cell>, name: String },
}

/// A ready cell as the routing table keys it: (name, peer id or 0, launch epoch).
pub(crate) type TargetKey = (String, u32, u32);

impl Source {
    /// The ready cells, keyed.
    pub(crate) async fn ready(&self, timeout: Duration) -> Vec<(TargetKey, Target)> {
        match self {
            Source::Hub(hub) => hub
                .peers()
                .into_iter()
                .filter(|p| matches!(p.state(), PeerState::Ready))
                .map(|p| ((p.name().to_string(), p.id(), p.identity().epoch), Target::Peer(p)))
                .collect(),
            Source::Relay(relay) => match relayed_peers(relay, timeout).await {
                Ok(peers) => peers
                    .into_iter()
                    .map(|(name, epoch)| ((name.clone(), 0, epoch), Target::Relayed { relay: relay.clone(), name }))
                    .collect(),
                Err(e) => {
                    tracing::warn!("the relay did not list its host's cells: {e}");
                    Vec::new()
                }
            },
        }
    }

    /// The host's own hub, where the gateway checks its access rules itself (through a
    /// relay, the host does).
    pub(crate) fn hub(&self) -> Option<&HubView> {
        match self {
            Source::Hub(hub) => Some(hub),
            Source::Relay(_) => None,
        }
    }

    /// How long a routing table stays good without asking again: the host's records are
    /// read for nothing in-process; a relay costs a round trip, asked at most this often.
    pub(crate) fn refresh_every(&self) -> Duration {
        match self {
            Source::Hub(_) => Duration::ZERO,
            Source::Relay(_) => Duration::from_millis(500),
        }
    }
}

async fn relayed_peers(relay: &Cell, timeout: Duration) -> cellshm::Result<Vec<(String, u32)>> {
    let answer = relay.call_async(PEERS, &[], &CallOptions::timeout(timeout)).await?;
    let bad = |m: String| Error::new(Status::ProtocolError, format!("cellshm.Relay.peers: {m}"));
    let mut reader = BodyReader::new(answer.bytes());
    let count = reader.u32().map_err(bad)?;
    (0..count.min(4096)).map(|_| Ok((reader.str().map_err(bad)?, reader.u32().map_err(bad)?))).collect()
}

impl Target {
    /// The cell's name.
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::Peer(peer) => peer.name(),
            Target::Relayed { name, .. } => name,
        }
    }

    /// Still ready, as far as the gateway can tell without asking.
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Target::Peer(peer) => matches!(peer.state(), PeerState::Ready),
            Target::Relayed { relay, .. } => !relay.is_stopped(),
        }
    }

    /// A unary call, for `caller`.
    pub(crate) async fn call(
        &self,
        method: &str,
        request: &[u8],
        options: &CallOptions,
        caller: Option<&PeerIdentity>,
    ) -> cellshm::Result<Response> {
        match self {
            Target::Peer(peer) => peer.call_async(method, request, options).await,
            Target::Relayed { relay, name } => {
                let routed = Routed::encode(name, method, caller.map(|c| c.name.as_str()), request);
                relay.call_async(CALL, &routed, options).await
            }
        }
    }

    /// A stream, for `caller`.
    pub(crate) async fn open_stream(
        &self,
        method: &str,
        request: &[u8],
        options: &CallOptions,
        caller: Option<&PeerIdentity>,
    ) -> cellshm::Result<AsyncStream> {
        match self {
            Target::Peer(peer) => peer.open_stream_async(method, request, options).await,
            Target::Relayed { relay, name } => {
                let routed = Routed::encode(name, method, caller.map(|c| c.name.as_str()), request);
                relay.open_stream_async(STREAM, &routed, options).await
            }
        }
    }
}
