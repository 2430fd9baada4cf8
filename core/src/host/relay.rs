//! The host's relay: `cellshm.Relay.peers`, `.call` and `.stream`, host methods that let
//! a process the host names by uid (it attached: a gRPC gateway in a process of its own)
//! reach the host's cells through the host, since an attached process can call only its
//! host. The host checks its access rules for the remote caller the relay names, as for
//! a call it routes itself ([`HubView::check_access`]). Wire format: docs/PROTOCOL.md §12.

use crate::error::{Error, Result};
use std::sync::{Arc, Weak};

use crate::host::{Hub, HubShared, HubView, Peer, PeerState};
use crate::link_end::{LinkEnd, Registry};
use crate::runtime::session::{CallOptions, PeerIdentity, StreamCall};
use crate::wire::{BodyReader, BodyWriter, MethodKind, Status};

/// Lists the ready cells: u32 n, then n × (str name, u32 epoch).
pub const PEERS: &str = "cellshm.Relay.peers";
/// A unary call to a cell: str peer, str method, str caller (empty: none), then the
/// request; answers the cell's response (or its error).
pub const CALL: &str = "cellshm.Relay.call";
/// A stream to a cell (bidi): the opening request as for [`CALL`]; items pass both
/// ways, the cell's end (response or error) is the stream's.
pub const STREAM: &str = "cellshm.Relay.stream";

/// A relayed request: to whom, what, for whom, with what.
#[derive(Debug)]
pub struct Routed<'a> {
    /// The cell's name.
    pub peer: String,
    /// `"pkg.Svc.Method"`.
    pub method: String,
    /// The remote caller's name, if the relay authenticated one.
    pub caller: Option<String>,
    /// The request (a stream's opening request).
    pub request: &'a [u8],
}

impl<'a> Routed<'a> {
    /// The header a relay sends before the request.
    pub fn encode(peer: &str, method: &str, caller: Option<&str>, request: &[u8]) -> Vec<u8> {
        let mut body = BodyWriter::default().str(peer).str(method).str(caller.unwrap_or("")).finish();
        body.extend_from_slice(request);
        body
    }

    fn decode(body: &'a [u8]) -> Result<Routed<'a>> {
        let bad = |m: String| Error::new(Status::InvalidArgument, format!("relay request: {m}"));
        let mut reader = BodyReader::new(body);
        let (peer, method, caller) =
            (reader.str().map_err(bad)?, reader.str().map_err(bad)?, reader.str().map_err(bad)?);
        Ok(Routed { peer, method, caller: (!caller.is_empty()).then_some(caller), request: reader.rest() })
    }

    /// The ready cell it names (the latest instance of that name), once the host's rules
    /// admit its caller to its method.
    fn target(&self, hub: &HubView) -> Result<Peer> {
        let caller = self.caller.as_deref().map(PeerIdentity::remote);
        hub.check_access(&self.method, caller.as_ref())?;
        hub.peers()
            .into_iter()
            .filter(|p| p.name() == self.peer && matches!(p.state(), PeerState::Ready))
            .max_by_key(|p| p.identity().epoch)
            .ok_or_else(|| Error::new(Status::Unavailable, format!("no ready cell is named {:?}", self.peer)))
    }
}

/// The options of a relayed call: the relay's deadline, else the default timeout.
fn onward(deadline_ns: u64) -> CallOptions {
    if deadline_ns == 0 {
        CallOptions::default()
    } else {
        CallOptions::deadline(deadline_ns)
    }
}

/// Serves the relay's methods on `hub`, to the attached processes of `uids` only (again:
/// to those uids instead).
pub(crate) fn enable(hub: &Hub, uids: &[u32]) -> Result<()> {
    let served = hub.shared.dispatcher.read().methods().iter().any(|(name, _)| name == PEERS);
    if !served {
        serve(hub)?;
    }
    for method in [PEERS, CALL, STREAM] {
        hub.allow(method, &[])?;
        hub.allow_attached(method, uids)?;
    }
    Ok(())
}

/// The hub a relay handler serves, if it still lives: the handlers live in the hub's
/// own dispatcher, so they hold it weakly (a strong hold would be a cycle, never freed).
fn hub_of(hub: &Weak<HubShared>) -> Result<HubView> {
    hub.upgrade().map(|shared| HubView { shared }).ok_or_else(|| Error::new(Status::Unavailable, "the hub is closing"))
}

fn serve(hub: &Hub) -> Result<()> {
    let weak = Arc::downgrade(&hub.shared);
    hub.method(PEERS, move |call| {
        let view = hub_of(&weak)?;
        let ready: Vec<Peer> = view.peers().into_iter().filter(|p| matches!(p.state(), PeerState::Ready)).collect();
        let mut body = BodyWriter::default();
        body.u32(ready.len() as u32);
        for peer in &ready {
            body.str(peer.name()).u32(peer.identity().epoch);
        }
        call.reply(&body.finish())
    })?;
    let weak = Arc::downgrade(&hub.shared);
    hub.method(CALL, move |call| {
        let routed = Routed::decode(call.payload())?;
        let target = routed.target(&hub_of(&weak)?)?;
        let response = target.call(&routed.method, routed.request, &onward(call.deadline_ns()))?;
        call.reply(response.bytes())
    })?;
    let weak = Arc::downgrade(&hub.shared);
    hub.stream_method_as(STREAM, MethodKind::Bidi, move |call| relay_stream(&hub_of(&weak)?, call))
}

/// Pipes a relayed stream: the relay's items to the cell on a thread of its own, the
/// cell's back on this one; the cell's end becomes the relay's, and a relay that cancels
/// cancels the cell's stream. The piping thread holds the cell's stream only while it
/// sends an item, so the cell's end never waits for the relay's caller to stop sending:
/// the thread ends at the relay stream's end, right after this returns.
fn relay_stream(hub: &HubView, call: &mut StreamCall) -> Result<()> {
    let routed = Routed::decode(call.request())?;
    let stream = routed.target(hub)?.open_stream(&routed.method, routed.request, &onward(call.deadline_ns()))?;
    let mut stream = Arc::new(stream);
    let relay = call.end();
    let upstream = Arc::downgrade(&stream);
    std::thread::Builder::new()
        .name("cellshm-relay".into())
        .spawn(move || loop {
            let item = relay.recv();
            let Some(upstream) = upstream.upgrade() else { return };
            match item {
                Ok(Some(item)) if upstream.send(item.bytes()).is_ok() => {}
                Ok(Some(_)) => return,
                Ok(None) => {
                    let _ = upstream.close_send();
                    return;
                }
                Err(_) => {
                    upstream.cancel();
                    return;
                }
            }
        })
        .map_err(|e| Error::system("starting a relay thread", e))?;
    let result = (|| {
        while let Some(item) = stream.recv()? {
            call.send(item.bytes())?;
        }
        Ok::<(), Error>(())
    })();
    if let Err(e) = result {
        stream.cancel();
        return Err(e);
    }
    // The cell's side ended: a send the piping thread has under way fails at once, and
    // then the stream is this thread's alone.
    let started = std::time::Instant::now();
    let stream = loop {
        match Arc::try_unwrap(stream) {
            Ok(stream) => break stream,
            Err(shared) if started.elapsed() < std::time::Duration::from_secs(1) => {
                stream = shared;
                std::thread::yield_now();
            }
            Err(shared) => {
                shared.cancel();
                return Err(Error::new(Status::Internal, "the relay's piping thread kept the stream"));
            }
        }
    };
    let response = stream.finish()?;
    call.set_response(response.bytes());
    Ok(())
}
