//! Reaching a hub through its socket: listing, INFO, and the requests of tools and
//! attaching cells.

use super::*;

/// A live hub, as `cellshm list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubListing {
    /// The hub's name.
    pub name: String,
    /// Protocol/layout version (major, minor).
    pub version: (u16, u16),
    /// The host's process id.
    pub host_pid: u32,
    /// The host's uid.
    pub uid: u32,
    /// Peers that are not dead.
    pub peers: u32,
    /// Peer slots.
    pub max_peers: u32,
    /// Since when the hub runs (ms since the Unix epoch).
    pub started_unix_ms: u64,
    /// How long it has been running (ms).
    pub uptime_ms: u64,
    /// Whether processes may attach.
    pub attach: bool,
    /// Ring and pool shape of its links.
    pub geometry: Geometry,
    /// The network endpoints its host runs beside it (a gRPC gateway, remote peers).
    pub endpoints: Vec<crate::host::EndpointListing>,
}

impl HubListing {
    fn parse(text: &str) -> Result<HubListing> {
        let bad = |m: String| Error::new(Status::ProtocolError, format!("hub INFO reply: {m}"));
        let mut lines = text.lines();
        match lines.next() {
            Some("OK") => {}
            Some(line) if line.starts_with("REFUSED ") => {
                return Err(Error::new(Status::PermissionDenied, line.trim_start_matches("REFUSED ").to_string()))
            }
            other => return Err(bad(format!("unexpected first line {other:?}"))),
        }
        let fields: std::collections::HashMap<&str, &str> = lines.filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| fields.get(k).copied().ok_or_else(|| bad(format!("no {k}")));
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().map_err(|_| bad(format!("{k}={v:?}"))));
        let (major, minor) = get("version")?.split_once('.').ok_or_else(|| bad("version".into()))?;
        let classes = get("classes")?
            .split(',')
            .map(|c| {
                let (size, count) = c.split_once('x')?;
                Some(SlotClass { slot_size: size.parse().ok()?, slot_count: count.parse().ok()? })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("classes".into()))?;
        let geometry = Geometry { ring_capacity: num("ring_capacity")? as u32, classes };
        geometry.validate().map_err(bad)?;
        // A hub of an older version says nothing of endpoints: none.
        let listed = fields.get("endpoints").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        let endpoints = (0..listed.min(crate::host::endpoints::MAX_LISTED_ENDPOINTS))
            .map(|i| {
                let value = get(&format!("endpoint.{i}"))?;
                crate::host::EndpointListing::parse(value).ok_or_else(|| bad(format!("endpoint.{i}={value:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HubListing {
            name: get("name")?.to_string(),
            version: (
                major.parse().map_err(|_| bad("version".into()))?,
                minor.parse().map_err(|_| bad("version".into()))?,
            ),
            host_pid: num("pid")? as u32,
            uid: num("uid")? as u32,
            peers: num("peers")? as u32,
            max_peers: num("max_peers")? as u32,
            started_unix_ms: num("started_unix_ms")?,
            uptime_ms: num("uptime_ms")?,
            attach: num("attach")? != 0,
            geometry,
            endpoints,
        })
    }
}

/// True if `hub` names a filesystem socket (`/...` or `./...`) rather than a hub name.
fn is_path(hub: &str) -> bool {
    hub.starts_with('/') || hub.starts_with("./") || hub.starts_with("../")
}

/// Connects to a hub: `NAME` (a hub of this user), `UID/NAME` (of user `UID`, for
/// attaching across users) or the path of a hub's filesystem socket (`/...`, `./...`).
/// For a name, checks that the process listening is of that uid (an abstract name can
/// be taken by anyone: an impostor of another uid is refused); for a path, the file's
/// permissions decide who could have bound it.
pub(crate) fn connect(hub: &str) -> Result<OwnedFd> {
    if is_path(hub) {
        let path = std::path::Path::new(hub);
        return socket::connect(socket::Address::Path(path), Duration::from_secs(10)).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                Error::new(Status::NotFound, format!("no live hub listens on {hub}"))
            }
            _ => Error::system(format!("connecting to {hub}"), e),
        });
    }
    let (owner, name) = match hub.split_once('/') {
        Some((uid, name)) => (
            uid.parse()
                .map_err(|_| Error::new(Status::InvalidArgument, format!("hub {hub:?}: expected NAME or UID/NAME")))?,
            name,
        ),
        None => (euid(), hub),
    };
    validate_hub_name(name)?;
    let address = socket_name(owner, name);
    let socket =
        socket::connect(socket::Address::Abstract(&address), Duration::from_secs(10)).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                Error::new(Status::NotFound, format!("no live hub named {name:?} (socket @{address})"))
            }
            _ => Error::system(format!("connecting to hub {name:?} (@{address})"), e),
        })?;
    let (pid, uid, _) =
        unix::peer_credentials(&socket).map_err(|e| Error::system("reading the hub's credentials", e))?;
    if uid != owner {
        return Err(Error::new(
            Status::PermissionDenied,
            format!("@{address} is served by pid {pid} of uid {uid}, not by a hub of uid {owner}"),
        ));
    }
    Ok(socket)
}

/// Sends one request and reads the first reply message (and its fds).
pub(crate) fn request(socket: &OwnedFd, line: &str) -> Result<(String, Vec<OwnedFd>)> {
    unix::send_with_fds(socket, line.as_bytes(), &[]).map_err(|e| Error::system("sending to the hub", e))?;
    recv_reply(socket)
}

pub(crate) fn recv_reply(socket: &OwnedFd) -> Result<(String, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    let (n, fds) = unix::recv_with_fds(socket, &mut buf).map_err(|e| Error::system("reading the hub's reply", e))?;
    if n == 0 {
        return Err(Error::new(Status::Unavailable, "the hub closed the connection without replying"));
    }
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

/// What hub `name` says about itself.
pub fn hub_listing(name: &str) -> Result<HubListing> {
    let socket = connect(name)?;
    let (text, _) = request(&socket, "INFO\n")?;
    HubListing::parse(&text)
}

pub(crate) fn parse_listing(text: &str) -> Result<HubListing> {
    HubListing::parse(text)
}

/// The live hubs of this user on this machine, by name.
pub fn list_hubs() -> Result<Vec<HubListing>> {
    let prefix = socket_name(euid(), "");
    let names = socket::listening_abstract_names(&prefix).map_err(|e| Error::system("reading /proc/net/unix", e))?;
    Ok(names.iter().filter_map(|n| hub_listing(&n[prefix.len()..]).ok()).collect())
}
