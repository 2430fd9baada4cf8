//! Serving: the method table and the context a handler runs in.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::serve_async::{AsyncCall, AsyncHandler, AsyncStreamCall, AsyncStreamHandler, Reply, Spawn};
use super::{copy_of, OutBody, Payload, Session, StreamCall, StreamHandler};
use crate::error::{Error, Result};
use crate::proto::link::IdHasher;
use crate::shm::pool::OutSlot;
use crate::shm::SharedBytes;
use crate::sys::clock::monotonic_now_ns;
use crate::wire::{self, MethodKind, Status, INLINE_CAPACITY};

/// A handler: reads the request through [`Call::payload`], answers through
/// [`Call::reply`] (or returns an error).
pub type Handler = dyn Fn(&mut Call<'_>) -> Result<()> + Send + Sync;

/// Who is at the other end of a link, as the host knows it: from the kernel (fork's pid,
/// SO_PEERCRED, `/proc`) and from the host's own records, never from what the cell says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's id (its slot in the hub).
    pub peer_id: u32,
    /// The name the host gave it (`Hub::add_peer`, the supervisor's cell name, or the
    /// name it attached as).
    pub name: String,
    /// The slot's launch count: tells this instance from earlier ones of the slot.
    pub epoch: u32,
    /// Its process id, once known.
    pub pid: Option<u32>,
    /// Its real user id, once known.
    pub uid: Option<u32>,
    /// It attached through the hub's socket under a name it chose (the host did not
    /// spawn it): its name proves nothing, and name allow-lists never admit it (see
    /// [`Dispatcher::allow_attached`]).
    pub attached: bool,
    /// A client of the hub's gRPC gateway (`cellshm-grpc`), named by its TLS client
    /// certificate's subject or by the gateway's token check: not a process of this
    /// machine (`peer_id` and `epoch` 0, no pid, no uid). Allow-lists admit it by name.
    pub remote: bool,
}

impl PeerIdentity {
    /// A remote caller (see [`PeerIdentity::remote`]) known as `name`.
    pub fn remote(name: impl Into<String>) -> PeerIdentity {
        PeerIdentity { peer_id: 0, name: name.into(), epoch: 0, pid: None, uid: None, attached: false, remote: true }
    }
}

/// Who may call one method: cells the host spawned, by the name it gave them, and
/// attached processes, by their uid.
#[derive(Clone, Debug, Default)]
pub(super) struct AllowList {
    names: Vec<String>,
    attached_uids: Vec<u32>,
}

impl AllowList {
    fn admits(&self, who: &PeerIdentity) -> bool {
        if who.attached {
            who.uid.is_some_and(|uid| self.attached_uids.contains(&uid))
        } else {
            self.names.contains(&who.name)
        }
    }
}

/// Decides whether a caller may call a method (its name given): see
/// [`Dispatcher::set_access_policy`].
pub type AccessPolicy = Arc<dyn Fn(&PeerIdentity, &str) -> bool + Send + Sync>;

/// What a call must pass before its handler runs: the method's allow list and the
/// dispatcher's policy (each if set).
#[derive(Clone)]
pub(super) struct AccessCheck {
    method: String,
    allowed: Option<Arc<AllowList>>,
    policy: Option<AccessPolicy>,
}

/// The id an access rule for `method` is kept under.
fn restricted_id(method: &str) -> Result<u32> {
    if method.is_empty() {
        return Err(Error::new(Status::InvalidArgument, "an access rule needs a method name"));
    }
    Ok(wire::method_id(method))
}

/// The most descriptor bytes one side keeps (`cellshm.Introspect.descriptors`): far
/// above any real set of `.proto` files, and a bound on what a registration can grow.
pub const MAX_DESCRIPTOR_BYTES: usize = 4 << 20;

impl AccessCheck {
    /// PERMISSION_DENIED unless `who` is listed (if the method has a list) and the policy
    /// (if any) admits it. A caller of unknown identity is refused.
    pub(super) fn check(&self, who: Option<&PeerIdentity>) -> Result<()> {
        let refused = |why: &str| {
            let caller = who.map_or("a caller of unknown identity".to_string(), |w| {
                if w.remote {
                    format!("remote caller {:?}", w.name)
                } else {
                    format!(
                        "cell {:?} (peer {}, pid {})",
                        w.name,
                        w.peer_id,
                        w.pid.map_or("?".into(), |p| p.to_string())
                    )
                }
            });
            Err(Error::new(Status::PermissionDenied, format!("{caller} may not call {:?}: {why}", self.method)))
        };
        let Some(who) = who else { return refused("its identity is unknown") };
        if let Some(allowed) = &self.allowed {
            if !allowed.admits(who) {
                return refused(if who.attached {
                    "it attached, and its uid is not among those the method allows attached processes of"
                } else {
                    "it is not on the method's allow list"
                });
            }
        }
        if let Some(policy) = &self.policy {
            if !policy(who, &self.method) {
                return refused("the access policy refused it");
            }
        }
        Ok(())
    }
}
/// How a unary method is served: on a server thread, or as a future on a runtime.
#[derive(Clone)]
pub(super) enum Unary {
    Blocking(Arc<Handler>),
    Async(Arc<AsyncHandler>, Arc<dyn Spawn>),
}

/// How a stream method is served: on a stream thread, or as a future on a runtime.
#[derive(Clone)]
pub(super) enum Streaming {
    Blocking(Arc<StreamHandler>),
    Async(Arc<AsyncStreamHandler>, Arc<dyn Spawn>),
}

/// Methods served on one side, by id.
#[derive(Default)]
pub struct Dispatcher {
    // Method ids are FNV hashes already: hash them as themselves.
    methods: HashMap<u32, (String, Unary), std::hash::BuildHasherDefault<IdHasher>>,
    streams: HashMap<u32, (String, MethodKind, Streaming), std::hash::BuildHasherDefault<IdHasher>>,
    /// Where async handlers run, unless their registration names a runtime.
    spawner: Option<Arc<dyn Spawn>>,
    /// The callers each restricted method (unary or stream) admits, by name.
    allowed: HashMap<u32, Arc<AllowList>, std::hash::BuildHasherDefault<IdHasher>>,
    policy: Option<AccessPolicy>,
    /// Serialized `FileDescriptorSet`s of the services served, each once.
    descriptors: Vec<Arc<[u8]>>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.methods.values().map(|(n, _)| n).chain(self.streams.values().map(|(n, _, _)| n)))
            .finish()
    }
}

impl Dispatcher {
    /// An empty dispatcher.
    pub fn new() -> Dispatcher {
        Dispatcher::default()
    }

    /// Registers `handler` for `"Service.method"`. Two names with the same id (a hash
    /// collision or a name registered twice) are refused.
    pub fn register<F>(&mut self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(&mut Call<'_>) -> Result<()> + Send + Sync + 'static,
    {
        let id = self.free_id(name)?;
        self.methods.insert(id, (name.to_string(), Unary::Blocking(Arc::new(handler))));
        Ok(())
    }

    /// Registers an async handler for `"Service.method"`: each call's future runs on
    /// `spawn` (see [`Dispatcher::set_spawner`] for the default).
    pub fn register_async<F, Fut, R>(&mut self, name: &str, spawn: Option<Arc<dyn Spawn>>, handler: F) -> Result<()>
    where
        F: Fn(AsyncCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<R>> + Send + 'static,
        R: AsRef<[u8]> + Send + Sync + 'static,
    {
        let spawn = self.spawner_for(name, spawn)?;
        let id = self.free_id(name)?;
        let handler: Arc<AsyncHandler> = Arc::new(move |call| {
            let reply = handler(call);
            Box::pin(async move { reply.await.map(|r| Box::new(r) as Reply) })
        });
        self.methods.insert(id, (name.to_string(), Unary::Async(handler, spawn)));
        Ok(())
    }

    /// Registers an async stream handler for `"Service.method"` (items flowing as `kind`
    /// says): each stream's future runs on `spawn` (see [`Dispatcher::set_spawner`]).
    pub fn register_stream_async<F, Fut, R>(
        &mut self,
        name: &str,
        kind: MethodKind,
        spawn: Option<Arc<dyn Spawn>>,
        handler: F,
    ) -> Result<()>
    where
        F: Fn(AsyncStreamCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<R>> + Send + 'static,
        R: AsRef<[u8]> + Send + Sync + 'static,
    {
        if !kind.is_stream() {
            return Err(Error::new(Status::InvalidArgument, format!("{name:?}: a stream method cannot be unary")));
        }
        let spawn = self.spawner_for(name, spawn)?;
        let id = self.free_id(name)?;
        let handler: Arc<AsyncStreamHandler> = Arc::new(move |call| {
            let reply = handler(call);
            Box::pin(async move { reply.await.map(|r| Box::new(r) as Reply) })
        });
        self.streams.insert(id, (name.to_string(), kind, Streaming::Async(handler, spawn)));
        Ok(())
    }

    /// Keeps a serialized `google.protobuf.FileDescriptorSet` describing served services
    /// (a set given twice is kept once). RESOURCE_EXHAUSTED past
    /// `MAX_DESCRIPTOR_BYTES` in all.
    pub fn add_descriptors(&mut self, file_descriptor_set: &[u8]) -> Result<()> {
        if file_descriptor_set.is_empty() || self.descriptors.iter().any(|d| **d == *file_descriptor_set) {
            return Ok(());
        }
        let kept: usize = self.descriptors.iter().map(|d| d.len()).sum();
        if kept + file_descriptor_set.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error::new(
                Status::ResourceExhausted,
                format!("descriptors past {MAX_DESCRIPTOR_BYTES} bytes in all are not kept"),
            ));
        }
        self.descriptors.push(file_descriptor_set.into());
        Ok(())
    }

    /// Every descriptor set kept, as one `FileDescriptorSet` (protobuf's repeated field
    /// `file` concatenates: the sets' bytes one after another are the union).
    pub fn descriptors(&self) -> Vec<u8> {
        self.descriptors.concat()
    }

    /// Where async handlers registered without a runtime of their own run. With the
    /// `tokio` feature and none set, the runtime a registration is made in.
    pub fn set_spawner(&mut self, spawn: Arc<dyn Spawn>) {
        self.spawner = Some(spawn);
    }

    fn spawner_for(&self, name: &str, spawn: Option<Arc<dyn Spawn>>) -> Result<Arc<dyn Spawn>> {
        if let Some(spawn) = spawn.or_else(|| self.spawner.clone()) {
            return Ok(spawn);
        }
        #[cfg(feature = "tokio")]
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(Arc::new(handle));
        }
        Err(Error::new(
            Status::FailedPrecondition,
            format!(
                "async method {name:?} has no runtime to run on: hand one over with `spawn_handlers_on` \
                 (or, with the `tokio` feature, register it inside a tokio runtime)"
            ),
        ))
    }

    /// Registers a stream method: `handler` runs on the link's stream pool for each
    /// stream opened to `"Service.method"`, and may send and receive items until it
    /// returns.
    /// Unary and stream methods share one id space.
    pub fn register_stream<F>(&mut self, name: &str, handler: F) -> Result<()>
    where
        F: Fn(&mut StreamCall) -> Result<()> + Send + Sync + 'static,
    {
        self.register_stream_as(name, MethodKind::Stream, handler)
    }

    /// [`Dispatcher::register_stream`] that also says which way items flow (what
    /// `cellshm.Introspect.methods` reports, and generated clients check).
    pub fn register_stream_as<F>(&mut self, name: &str, kind: MethodKind, handler: F) -> Result<()>
    where
        F: Fn(&mut StreamCall) -> Result<()> + Send + Sync + 'static,
    {
        if !kind.is_stream() {
            return Err(Error::new(Status::InvalidArgument, format!("{name:?}: a stream method cannot be unary")));
        }
        let id = self.free_id(name)?;
        self.streams.insert(id, (name.to_string(), kind, Streaming::Blocking(Arc::new(handler))));
        Ok(())
    }

    fn free_id(&self, name: &str) -> Result<u32> {
        wire::validate_method_name(name).map_err(|m| Error::new(Status::InvalidArgument, m))?;
        let id = wire::method_id(name);
        if let Some((existing, _)) = self.methods.get(&id) {
            return Err(Error::new(
                Status::AlreadyExists,
                format!("method {name:?} has id {id:#010x}, already registered for {existing:?}"),
            ));
        }
        if let Some((existing, _, _)) = self.streams.get(&id) {
            return Err(Error::new(
                Status::AlreadyExists,
                format!("method {name:?} has id {id:#010x}, already registered for stream {existing:?}"),
            ));
        }
        Ok(id)
    }

    /// Only the cells the host spawned under the names in `names` (remote callers of
    /// those names too, and attached processes of the uids
    /// [`Dispatcher::allow_attached`] lists) may call `method`; others get
    /// PERMISSION_DENIED and its handler never runs. The rule is the method's, by name,
    /// whether it is registered here yet or not: it also holds where the host admits
    /// calls to a method its cells serve (a gRPC gateway checks it for remote callers,
    /// [`Dispatcher::check`]). A process that attached is never admitted by its name: it
    /// chose it. An empty list admits nobody; `None` lifts the restriction (both lists).
    /// INVALID_ARGUMENT for an empty name.
    pub fn allow(&mut self, method: &str, names: Option<&[&str]>) -> Result<()> {
        let id = restricted_id(method)?;
        match names {
            Some(names) => {
                let mut list = self.allowed.get(&id).map(|l| (**l).clone()).unwrap_or_default();
                list.names = names.iter().map(|n| n.to_string()).collect();
                self.allowed.insert(id, Arc::new(list));
            }
            None => {
                self.allowed.remove(&id);
            }
        }
        Ok(())
    }

    /// Lets attached processes (see [`PeerIdentity::attached`]) of the uids in `uids` call
    /// `method`, beside the spawned cells [`Dispatcher::allow`] names; restricts the method
    /// if it was open to everyone. NOT_FOUND for a method not registered.
    pub fn allow_attached(&mut self, method: &str, uids: &[u32]) -> Result<()> {
        let id = restricted_id(method)?;
        let mut list = self.allowed.get(&id).map(|l| (**l).clone()).unwrap_or_default();
        list.attached_uids = uids.to_vec();
        self.allowed.insert(id, Arc::new(list));
        Ok(())
    }

    /// Whether `who` may call `method` by the rules kept here (its allow list, the access
    /// policy), the method served here or not: what a gateway asks for a remote caller
    /// before it routes the call. PERMISSION_DENIED as for a call refused here.
    pub fn check(&self, method: &str, who: Option<&PeerIdentity>) -> Result<()> {
        let allowed = self.allowed.get(&wire::method_id(method)).cloned();
        if allowed.is_none() && self.policy.is_none() {
            return Ok(());
        }
        AccessCheck { method: method.to_string(), allowed, policy: self.policy.clone() }.check(who)
    }

    /// Asks `policy(caller, method)` before every call and stream of every method served
    /// here (after the method's allow list, if it has one); false refuses it with
    /// PERMISSION_DENIED. It runs on the serving thread for each call: keep it short.
    /// `None` removes it.
    pub fn set_access_policy(&mut self, policy: Option<AccessPolicy>) {
        self.policy = policy;
    }

    /// What a call of method `id` must pass, if anything.
    pub(super) fn access_check(&self, id: u32) -> Option<AccessCheck> {
        let allowed = self.allowed.get(&id).cloned();
        if allowed.is_none() && self.policy.is_none() {
            return None;
        }
        let method = self.methods.get(&id).map(|(n, _)| n).or(self.streams.get(&id).map(|(n, _, _)| n))?;
        Some(AccessCheck { method: method.clone(), allowed, policy: self.policy.clone() })
    }

    /// Registered method names and ids, sorted by name.
    pub fn methods(&self) -> Vec<(String, u32)> {
        self.methods_and_kinds().into_iter().map(|(n, id, _)| (n, id)).collect()
    }

    /// Registered method names, ids and kinds, sorted by name.
    pub fn methods_and_kinds(&self) -> Vec<(String, u32, MethodKind)> {
        let unary = self.methods.iter().map(|(id, (n, _))| (n.clone(), *id, MethodKind::Unary));
        let streams = self.streams.iter().map(|(id, (n, kind, _))| (n.clone(), *id, *kind));
        let mut v: Vec<_> = unary.chain(streams).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub(super) fn get(&self, id: u32) -> Option<Unary> {
        self.methods.get(&id).map(|(_, h)| h.clone())
    }

    pub(super) fn get_stream(&self, id: u32) -> Option<Streaming> {
        self.streams.get(&id).map(|(_, _, h)| h.clone())
    }
}

/// Tells whether one unary call was cancelled (see [`Call::cancel_token`]).
#[derive(Clone)]
pub struct CancelToken {
    pub(super) session: Arc<Session>,
    pub(super) msg_id: u64,
    pub(super) deadline_ns: u64,
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken").field("msg_id", &self.msg_id).field("cancelled", &self.is_cancelled()).finish()
    }
}

impl CancelToken {
    /// True once the caller cancelled the call, its deadline passed, or the link failed.
    pub fn is_cancelled(&self) -> bool {
        (self.deadline_ns != 0 && monotonic_now_ns() >= self.deadline_ns)
            || self.session.cancelled_calls.contains(self.msg_id)
            || self.session.failure().is_some()
    }

    /// Cancelled other than by the caller's CANCEL: the deadline passed, or the link
    /// failed.
    pub(super) fn is_cancelled_otherwise(&self) -> bool {
        (self.deadline_ns != 0 && monotonic_now_ns() >= self.deadline_ns) || self.session.failure().is_some()
    }

    /// Waits up to `timeout` (and no longer than the call's deadline) for cancellation;
    /// returns [`CancelToken::is_cancelled`].
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        let mut until = std::time::Instant::now() + timeout;
        if self.deadline_ns != 0 {
            let left = Duration::from_nanos(self.deadline_ns.saturating_sub(monotonic_now_ns()));
            until = until.min(std::time::Instant::now() + left);
        }
        self.session.cancelled_calls.wait_for(self.msg_id, until, || self.session.failure().is_some());
        self.is_cancelled()
    }

    /// The caller's deadline (CLOCK_MONOTONIC ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns
    }

    /// Who made the call (host side; `None` in a cell, whose caller is its host).
    pub fn caller(&self) -> Option<PeerIdentity> {
        self.session.hooks.caller()
    }
}

/// What a request's handler produced.
pub(super) enum ReplyBody {
    Empty,
    Inline([u8; INLINE_CAPACITY], usize),
    Slot(OutSlot, usize),
}

/// Decides, when asked again, whether a request retained past its handler may go: true
/// once nothing outside the library reads it any more.
pub type RetainCheck = Box<dyn FnMut() -> bool + Send>;

/// A request being served: the request, the reply being built, and what the handler
/// asked to keep.
pub struct Call<'a> {
    pub(super) msg_id: u64,
    pub(super) request: &'a Payload,
    pub(super) retain: Option<RetainCheck>,
    pub(super) method_id: u32,
    pub(super) deadline_ns: u64,
    pub(super) session: &'a Arc<Session>,
    pub(super) reply: ReplyBody,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("method_id", &self.method_id).field("len", &self.request.len()).finish()
    }
}

impl<'a> Call<'a> {
    /// The request payload. Payloads larger than 80 bytes are copied out of shared
    /// memory on the first call (the caller could change them under a reference); read
    /// them in place with [`Call::request`] instead.
    pub fn payload(&self) -> &'a [u8] {
        self.request.bytes()
    }

    /// The request where it lies, without a copy, valid for the handler's run. Its
    /// lifetime is not tied to `self`, so a reply can be written from it in place:
    /// `let r = call.request(); call.reply_with(r.len(), |b| { r.copy_to_slice(0, b); b.len() })`.
    pub fn request(&self) -> SharedBytes<'a> {
        self.request.shared()
    }

    /// Keeps the request's memory (its slot) past the handler's return until `check`
    /// answers true, asked before each later request of this link is served. For
    /// zero-copy views a binding hands to code that may keep them (a Python memoryview
    /// something still exports): the slot stays the reader's, the sender's pool is one
    /// slot smaller meanwhile. A link that ends with requests still retained keeps its
    /// memory mapped for good (nobody asks the checks again): a leak, but never a view
    /// into unmapped or reused memory.
    pub fn retain_request_until(&mut self, check: impl FnMut() -> bool + Send + 'static) {
        self.retain = Some(Box::new(check));
    }

    /// Who made the call, as the host knows it (host side; `None` in a cell, whose
    /// caller is its host).
    pub fn caller(&self) -> Option<PeerIdentity> {
        self.session.hooks.caller()
    }

    /// The method id of this call.
    pub fn method_id(&self) -> u32 {
        self.method_id
    }

    /// The caller's absolute deadline (CLOCK_MONOTONIC ns), 0 if none.
    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns
    }

    /// True once the caller cancelled this call, its deadline passed, or the link
    /// failed: a long handler polls this and stops early (its answer would be dropped).
    pub fn is_cancelled(&self) -> bool {
        self.cancel_token().is_cancelled()
    }

    /// Waits up to `timeout` for [`Call::is_cancelled`] to become true; returns it.
    pub fn wait_cancelled(&self, timeout: Duration) -> bool {
        self.cancel_token().wait_cancelled(timeout)
    }

    /// A handle that answers [`Call::is_cancelled`] from anywhere (another thread the
    /// handler hands work to, or a language binding), for as long as it is kept.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken { session: self.session.clone(), msg_id: self.msg_id, deadline_ns: self.deadline_ns }
    }

    /// Time left before the caller's deadline, if it has one.
    pub fn remaining(&self) -> Option<Duration> {
        (self.deadline_ns != 0).then(|| Duration::from_nanos(self.deadline_ns.saturating_sub(monotonic_now_ns())))
    }

    /// Sets the reply to a copy of `bytes`.
    pub fn reply(&mut self, bytes: &[u8]) -> Result<()> {
        self.reply_with(bytes.len(), copy_of(bytes))
    }

    /// Writes the reply in place: `fill` gets a buffer of `max_len` bytes (in shared
    /// memory when larger than 80) and returns how many it wrote.
    pub fn reply_with(&mut self, max_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<()> {
        self.discard_reply();
        self.reply = self.session.fill_body(max_len, self.deadline_ns, fill)?.into();
        Ok(())
    }

    /// Two-step in-place reply (for callers that cannot pass a closure, such as C):
    /// returns a buffer of `max_len` bytes (in shared memory when larger than 80) that
    /// becomes the reply; shorten it afterwards with [`Call::set_reply_len`].
    pub fn reply_buffer(&mut self, max_len: usize) -> Result<&mut [u8]> {
        self.reply_with(max_len, |buf| buf.len())?;
        Ok(match &mut self.reply {
            ReplyBody::Inline(bytes, n) => &mut bytes[..*n],
            ReplyBody::Slot(slot, n) => &mut slot.buffer()[..*n],
            ReplyBody::Empty => &mut [],
        })
    }

    /// Sets how many bytes of the buffer from [`Call::reply_buffer`] are the reply.
    pub fn set_reply_len(&mut self, len: usize) -> Result<()> {
        let capacity = match &self.reply {
            ReplyBody::Inline(_, n) | ReplyBody::Slot(_, n) => *n,
            ReplyBody::Empty => 0,
        };
        if len > capacity {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("reply length {len} exceeds the {capacity}-byte reply buffer"),
            ));
        }
        match &mut self.reply {
            ReplyBody::Inline(_, n) | ReplyBody::Slot(_, n) => *n = len,
            ReplyBody::Empty => {}
        }
        Ok(())
    }

    fn discard_reply(&mut self) {
        if let ReplyBody::Slot(slot, _) = std::mem::replace(&mut self.reply, ReplyBody::Empty) {
            self.session.tx_pool.lock().free_unsent(slot);
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.discard_reply();
    }
}

impl From<OutBody> for ReplyBody {
    fn from(b: OutBody) -> ReplyBody {
        match b {
            OutBody::Inline(bytes, n) => ReplyBody::Inline(bytes, n),
            OutBody::Slot(s, n) => ReplyBody::Slot(s, n),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn two_names_with_one_id_are_refused_naming_both() {
        // "Svc.m79518" and "Svc.m67915" hash to 0x66c0a660: without the check, a call to
        // one would run the other's handler.
        assert_eq!(wire::method_id("Svc.m79518"), wire::method_id("Svc.m67915"));
        let mut d = Dispatcher::new();
        d.register("Svc.m67915", |call| call.reply(b"67915")).unwrap();
        let e = d.register("Svc.m79518", |call| call.reply(b"79518")).unwrap_err();
        assert_eq!(e.status(), Status::AlreadyExists);
        assert!(e.message().contains("Svc.m79518") && e.message().contains("Svc.m67915"), "{e}");
        let e = d.register_stream_as("Svc.m79518", MethodKind::Bidi, |_| Ok(())).unwrap_err();
        assert_eq!(e.status(), Status::AlreadyExists, "{e}");
        assert_eq!(d.methods(), [("Svc.m67915".to_string(), wire::method_id("Svc.m67915"))]);
    }

    #[test]
    fn descriptor_sets_concatenate_each_once_and_stop_at_the_bound() {
        let mut d = Dispatcher::new();
        assert!(d.descriptors().is_empty());
        d.add_descriptors(b"\x0a\x01a").unwrap();
        d.add_descriptors(b"\x0a\x01b").unwrap();
        d.add_descriptors(b"\x0a\x01a").unwrap();
        d.add_descriptors(b"").unwrap();
        assert_eq!(d.descriptors(), b"\x0a\x01a\x0a\x01b");
        let big = vec![7u8; MAX_DESCRIPTOR_BYTES];
        assert_eq!(d.add_descriptors(&big).unwrap_err().status(), Status::ResourceExhausted);
        assert_eq!(d.descriptors().len(), 6, "a refused set leaves the kept ones as they were");
    }

    #[test]
    fn stream_kinds_are_kept_and_a_unary_kind_for_a_stream_is_refused() {
        let mut d = Dispatcher::new();
        d.register("A.unary", |call| call.reply(b"")).unwrap();
        d.register_stream("A.any", |_| Ok(())).unwrap();
        d.register_stream_as("A.up", MethodKind::ClientStreaming, |_| Ok(())).unwrap();
        let kinds: Vec<(String, MethodKind)> = d.methods_and_kinds().into_iter().map(|(n, _, k)| (n, k)).collect();
        let want =
            [("A.any", MethodKind::Stream), ("A.unary", MethodKind::Unary), ("A.up", MethodKind::ClientStreaming)];
        assert_eq!(kinds, want.map(|(n, k)| (n.to_string(), k)));
        let e = d.register_stream_as("A.bad", MethodKind::Unary, |_| Ok(())).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    }

    fn cell(name: &str, pid: u32) -> PeerIdentity {
        PeerIdentity {
            peer_id: 1,
            name: name.into(),
            epoch: 1,
            pid: Some(pid),
            uid: Some(1000),
            attached: false,
            remote: false,
        }
    }

    #[test]
    fn access_rules_admit_listed_names_and_what_the_policy_admits_and_refuse_the_unknown() {
        let mut d = Dispatcher::new();
        d.register("Host.open", |_| Ok(())).unwrap();
        d.register("Host.secret", |_| Ok(())).unwrap();
        d.register_stream("Host.feed", |_| Ok(())).unwrap();
        let id = wire::method_id;
        assert!(d.access_check(id("Host.secret")).is_none(), "no rule: nothing to check, nothing computed");
        assert_eq!(d.allow("", Some(&["a"])).unwrap_err().status(), Status::InvalidArgument);
        // A rule for a method served elsewhere (a cell's, called through a gateway) is
        // kept by name and checked by name; a method registered later has it already.
        d.allow("kv.Store.Put", Some(&["writer"])).unwrap();
        assert!(d.check("kv.Store.Put", Some(&PeerIdentity::remote("writer"))).is_ok());
        let refused = d.check("kv.Store.Put", Some(&PeerIdentity::remote("reader"))).unwrap_err();
        assert_eq!(refused.status(), Status::PermissionDenied);
        assert!(refused.message().contains("remote caller \"reader\""), "{refused}");
        assert!(d.check("kv.Store.Put", None).is_err(), "an unauthenticated caller is refused");
        assert!(d.check("kv.Store.Get", None).is_ok(), "no rule: anyone");
        d.register("kv.Store.Put", |_| Ok(())).unwrap();
        assert!(d.access_check(id("kv.Store.Put")).unwrap().check(Some(&cell("writer", 3))).is_ok());
        assert!(d.access_check(id("kv.Store.Put")).unwrap().check(Some(&cell("reader", 4))).is_err());

        d.allow("Host.secret", Some(&["a"])).unwrap();
        d.allow("Host.feed", Some(&[])).unwrap();
        let secret = d.access_check(id("Host.secret")).unwrap();
        assert!(secret.check(Some(&cell("a", 10))).is_ok());
        let refused = secret.check(Some(&cell("b", 11))).unwrap_err();
        assert_eq!(refused.status(), Status::PermissionDenied);
        assert!(refused.message().contains("cell \"b\" (peer 1, pid 11)"), "{refused}");
        assert_eq!(secret.check(None).unwrap_err().status(), Status::PermissionDenied, "unknown: refused");
        let feed = d.access_check(id("Host.feed")).unwrap();
        assert!(feed.check(Some(&cell("a", 10))).is_err(), "an empty list admits nobody");
        assert!(d.access_check(id("Host.open")).is_none());

        // The policy applies to every method, after the list.
        d.set_access_policy(Some(Arc::new(|who: &PeerIdentity, method: &str| {
            who.pid == Some(10) || method == "Host.open"
        })));
        assert!(d.access_check(id("Host.open")).unwrap().check(Some(&cell("b", 11))).is_ok());
        assert!(d.access_check(id("Host.secret")).unwrap().check(Some(&cell("a", 10))).is_ok());
        let e = d.access_check(id("Host.secret")).unwrap().check(Some(&cell("a", 12))).unwrap_err();
        assert!(e.message().contains("policy"), "{e}");
        d.allow("Host.secret", None).unwrap();
        d.set_access_policy(None);
        assert!(d.access_check(id("Host.secret")).is_none());
    }
}
