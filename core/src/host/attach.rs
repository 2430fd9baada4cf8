//! Attaching: a process the host did not spawn joins through a Unix socket next to the
//! hub file (`<hub>.sock`).
//!
//! The host checks the connecting process's uid with SO_PEERCRED against an allow-list
//! (the host's own uid by default), reserves a peer slot, and passes two fds with
//! SCM_RIGHTS: the cell's end of the doorbell and the hub file itself, so an allowed
//! uid needs no permission on the hub file's path. A refused connection gets the reason
//! and it is logged.
//!
//! Wire: client → host `ATTACH <name>\n`; host → client `OK <peer_id> <epoch>\n` with
//! [doorbell, hub file], or `REFUSED <reason>\n`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::{add_peer, HubShared, PeerOptions};
use crate::doorbell::unix;
use crate::error::{Error, Result};

/// Who may attach, and how the host talks to attached cells.
#[derive(Clone, Debug)]
pub struct AttachPolicy {
    /// uids allowed to attach; the host's effective uid by default.
    pub allowed_uids: Vec<u32>,
    /// Options of the links to attached cells.
    pub peer: PeerOptions,
}

impl Default for AttachPolicy {
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions.
        AttachPolicy { allowed_uids: vec![unsafe { libc::geteuid() }], peer: PeerOptions::default() }
    }
}

/// The attach socket of a hub. Dropping it stops accepting and removes the socket.
#[derive(Debug)]
pub struct AttachListener {
    path: PathBuf,
    listener: Arc<UnixListener>,
    refusals: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl AttachListener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why connections were refused, oldest first.
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().clone()
    }
}

impl Drop for AttachListener {
    fn drop(&mut self) {
        // SAFETY: shutdown on a socket we own; it makes the blocked accept() return.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The attach socket's path for a hub file.
pub fn socket_path(hub_path: &Path) -> PathBuf {
    let mut name = hub_path.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

pub(super) fn listen(shared: Arc<HubShared>, policy: AttachPolicy) -> Result<AttachListener> {
    let path = socket_path(shared.file.path());
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| Error::system(format!("binding {}", path.display()), e))?;
    // Anyone may connect; the uid check below decides who may attach.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| Error::system(format!("chmod {}", path.display()), e))?;
    let listener = Arc::new(listener);
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let (accepting, refused) = (listener.clone(), refusals.clone());
    let thread = std::thread::Builder::new()
        .name("cellshm-attach".into())
        .spawn(move || {
            for stream in accepting.incoming() {
                match stream {
                    Ok(stream) => serve(&shared, &policy, stream, &refused),
                    // The listener was shut down (dropped): stop.
                    Err(_) => return,
                }
            }
        })
        .map_err(|e| Error::system("spawning the attach thread", e))?;
    Ok(AttachListener { path, listener, refusals, thread: Some(thread) })
}

fn serve(shared: &Arc<HubShared>, policy: &AttachPolicy, mut stream: UnixStream, refusals: &Mutex<Vec<String>>) {
    let refuse = |stream: &mut UnixStream, reason: String| {
        tracing::warn!(hub = %shared.file.path().display(), "attach refused: {reason}");
        refusals.lock().push(reason.clone());
        let _ = stream.write_all(format!("REFUSED {reason}\n").as_bytes());
    };
    let (pid, uid, _) = match unix::peer_credentials(&stream) {
        Ok(c) => c,
        Err(e) => return refuse(&mut stream, format!("no peer credentials: {e}")),
    };
    if !policy.allowed_uids.contains(&uid) {
        return refuse(&mut stream, format!("uid {uid} (pid {pid}) is not allowed to attach"));
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while request.len() < 256 && !request.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => return refuse(&mut stream, format!("pid {pid} sent no ATTACH request")),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let Some(name) = request.trim_end().strip_prefix("ATTACH ").filter(|n| !n.is_empty()) else {
        return refuse(&mut stream, format!("pid {pid} sent {request:?}, expected \"ATTACH <name>\""));
    };
    let ticket = match add_peer(shared, name, policy.peer.clone()) {
        Ok(t) => t,
        Err(e) => return refuse(&mut stream, format!("no peer slot for {name:?}: {e}")),
    };
    let epoch = ticket.epoch();
    let (peer, child_end) = ticket.into_attached(pid);
    let reply = format!("OK {} {epoch}\n", peer.id());
    if let Err(e) =
        unix::send_with_fds(&stream, reply.as_bytes(), &[child_end.as_raw_fd(), shared.file.file().as_raw_fd()])
    {
        tracing::warn!("attach of {name:?} (pid {pid}) failed: {e}");
    }
    // Our copy of the cell's end is closed here: from now on its EOF means the cell died.
    drop(child_end);
    tracing::info!(cell = name, peer_id = peer.id(), pid, uid, "cell attached");
}

/// The cell side: connects to the hub's attach socket as `name`; returns the join
/// arguments and the hub file.
pub(crate) fn request(hub_path: &Path, name: &str) -> Result<(crate::cell::JoinArgs, std::fs::File)> {
    let path = socket_path(hub_path);
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| Error::system(format!("connecting to the attach socket {}", path.display()), e))?;
    // A refused client may find the socket closed before its request is written: the
    // refusal is then already waiting to be read, so read before reporting the write.
    let sent = stream.write_all(format!("ATTACH {name}\n").as_bytes());
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 512];
    let (n, fds) = match unix::recv_with_fds(&stream, &mut buf) {
        Ok((0, _)) | Err(_) if sent.is_err() => return Err(Error::system("sending ATTACH", sent.unwrap_err())),
        Ok(reply) => reply,
        Err(e) => return Err(Error::system("reading the attach reply", e)),
    };
    let reply = String::from_utf8_lossy(&buf[..n]).trim_end().to_string();
    if let Some(reason) = reply.strip_prefix("REFUSED ") {
        return Err(Error::new(crate::Status::PermissionDenied, format!("attach refused: {reason}")));
    }
    let mut parts = reply.strip_prefix("OK ").unwrap_or_default().split(' ');
    let (Some(peer_id), Some(epoch)) =
        (parts.next().and_then(|p| p.parse().ok()), parts.next().and_then(|e| e.parse().ok()))
    else {
        return Err(Error::new(crate::Status::ProtocolError, format!("unexpected attach reply {reply:?}")));
    };
    let mut fds = fds.into_iter();
    let (Some(doorbell), Some(file)) = (fds.next(), fds.next()) else {
        return Err(Error::new(crate::Status::ProtocolError, "the attach reply carried no file descriptors"));
    };
    let args = crate::cell::JoinArgs {
        hub_path: hub_path.to_path_buf(),
        peer_id,
        doorbell_fd: std::os::fd::IntoRawFd::into_raw_fd(doorbell),
        peer_epoch: Some(epoch),
    };
    Ok((args, std::fs::File::from(file)))
}
