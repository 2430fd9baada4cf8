//! An in-process pair of sessions (quinn's `Pair`): a host session and a cell session
//! over one real link (its two memfds and a doorbell socket pair), both in this test
//! process, joined by a real HELLO. Session behaviour gets unit tests without child
//! processes: calls both ways, errors, deadlines, cancellation, streams, the peer
//! closing.

use std::os::fd::IntoRawFd;

use super::*;
use crate::proto::hello::{self, LinkId};
use crate::shm::{HubConfig, JoinRecord, LinkMemory, LAYOUT_MINOR};
use crate::sys::doorbell;

/// The host's hooks of a pair: accept the HELLO of the one link there is.
struct PairHost {
    link: LinkId,
    max_payload: u32,
}

impl Hooks for PairHost {
    fn on_hello(&self, hello: wire::Hello) -> Result<wire::Hello> {
        hello::host_accepts(self.link, &hello)
            .map_err(|r| Error::new(Status::ProtocolError, r.describe(self.link, "cell")))?;
        Ok(hello::host_ack(self.link, self.max_payload))
    }
}

/// A cell's hooks: nothing to add.
struct PairCell;

impl Hooks for PairCell {}

/// A host session and a cell session on one link, each with its own handler table.
pub(crate) struct Pair {
    pub(crate) host: Arc<Session>,
    pub(crate) cell: Arc<Session>,
    pub(crate) host_methods: Arc<RwLock<Dispatcher>>,
    pub(crate) cell_methods: Arc<RwLock<Dispatcher>>,
}

impl Pair {
    /// A joined pair with one server thread on each side, the cell's HELLO accepted.
    pub(crate) fn new() -> Pair {
        Pair::with(WaitStrategy::default())
    }

    /// A joined pair whose threads wait as `wait` says.
    pub(crate) fn with(wait: WaitStrategy) -> Pair {
        let geometry = HubConfig::default().geometry();
        let max_payload = geometry.max_payload();
        let record = JoinRecord {
            layout_minor: LAYOUT_MINOR,
            peer_id: 0,
            epoch: 1,
            host_pid: std::process::id(),
            hub_name: "pair".into(),
            geometry,
        };
        let (memory, handoff) = LinkMemory::create(&record).expect("link memory");
        let cell_region = handoff.map_as_cell().expect("the cell's mapping");
        let (host_bell, cell_end) = doorbell::pair().expect("doorbell pair");
        let cell_bell = Doorbell::from_inherited(cell_end.into_raw_fd()).expect("the cell's doorbell");
        let host_methods = Arc::new(RwLock::new(Dispatcher::new()));
        let cell_methods = Arc::new(RwLock::new(Dispatcher::new()));
        let link = LinkId { peer_id: 0, epoch: 1 };
        let config = |side, label: &str, region, doorbell, dispatcher: &Arc<RwLock<Dispatcher>>, hooks| SessionConfig {
            side,
            label: label.into(),
            region,
            doorbell,
            wait,
            server_wait: wait,
            dispatcher: dispatcher.clone(),
            hooks,
            max_inbound_streams: MAX_INBOUND_STREAMS,
            stream_threads: STREAM_THREADS,
            default_timeout: Duration::from_secs(10),
            metrics: side == Side::Host,
            stream_window: STREAM_WINDOW,
        };
        let host_hooks: Box<dyn Hooks> = Box::new(PairHost { link, max_payload });
        // SAFETY: the memfds were made for this pair just now: one session per side.
        let host = unsafe {
            Session::new(config(Side::Host, "pair cell", memory.region.clone(), host_bell, &host_methods, host_hooks))
        }
        .expect("host session");
        // SAFETY: as above.
        let cell = unsafe {
            Session::new(config(Side::Cell, "pair host", cell_region, cell_bell, &cell_methods, Box::new(PairCell)))
        }
        .expect("cell session");
        host.start_servers(1).expect("host servers");
        cell.start_servers(1).expect("cell servers");
        let hello = hello::cell_hello(link, wire::PROTOCOL_VERSION_MINOR, max_payload);
        cell.control_call(ControlKind::Hello, &hello.encode(), Duration::from_secs(10)).expect("HELLO accepted");
        // The memory stays mapped through the sessions' regions; its read-only
        // descriptors are for tools only.
        drop(memory);
        Pair { host, cell, host_methods, cell_methods }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.host.close();
        self.cell.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(dispatcher: &RwLock<Dispatcher>) {
        dispatcher.write().register("Echo.echo", |call: &mut Call<'_>| call.reply(call.payload())).unwrap();
    }

    fn call(session: &Arc<Session>, method: &str, payload: &[u8], options: &CallOptions) -> Result<Response> {
        session.call_with(wire::method_id(method), Some(method), payload.len(), copy_of(payload), options)
    }

    #[test]
    fn calls_go_both_ways_inline_and_in_slots() {
        let pair = Pair::new();
        echo(&pair.cell_methods);
        echo(&pair.host_methods);
        for len in [0, 1, 16, 17, 80, 81, 4096, 60_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let options = CallOptions::timeout(Duration::from_secs(10));
            assert_eq!(call(&pair.host, "Echo.echo", &payload, &options).unwrap().bytes(), &payload[..], "{len}");
            assert_eq!(call(&pair.cell, "Echo.echo", &payload, &options).unwrap().bytes(), &payload[..], "{len}");
        }
    }

    #[test]
    fn a_handlers_error_an_unknown_method_and_a_deadline_come_back_as_statuses() {
        let pair = Pair::new();
        pair.cell_methods
            .write()
            .register("Test.fail", |_: &mut Call<'_>| Err(Error::new(Status::NotFound, "no such key")))
            .unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = parking_lot::Mutex::new(wait);
        pair.cell_methods
            .write()
            .register("Test.hold", move |_: &mut Call<'_>| {
                let _ = wait.lock().recv_timeout(Duration::from_secs(10));
                Ok(())
            })
            .unwrap();
        let options = CallOptions::timeout(Duration::from_secs(10));
        let e = call(&pair.host, "Test.fail", b"", &options).unwrap_err();
        assert_eq!((e.status(), e.message().contains("no such key")), (Status::NotFound, true), "{e}");
        let e = call(&pair.host, "Nope.nope", b"", &options).unwrap_err();
        assert_eq!(e.status(), Status::Unimplemented, "{e}");
        let e = call(&pair.host, "Test.hold", b"", &CallOptions::timeout(Duration::from_millis(50))).unwrap_err();
        assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
        release.send(()).unwrap();
    }

    #[test]
    fn a_stream_delivers_its_items_in_order_then_its_end() {
        let pair = Pair::new();
        pair.cell_methods
            .write()
            .register_stream("Feed.count", |call: &mut StreamCall| {
                for i in 0..100u32 {
                    call.send(&i.to_le_bytes())?;
                }
                Ok(())
            })
            .unwrap();
        let stream = pair
            .host
            .open_stream(wire::method_id("Feed.count"), Some("Feed.count"), b"", &CallOptions::default())
            .unwrap();
        let items: Vec<u32> = std::iter::from_fn(|| stream.recv().unwrap())
            .map(|item| u32::from_le_bytes(item.bytes().try_into().unwrap()))
            .collect();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_closed_peer_fails_the_calls_waiting_on_it() {
        let pair = Pair::new();
        let (entered, started) = std::sync::mpsc::channel::<()>();
        let entered = parking_lot::Mutex::new(entered);
        pair.cell_methods
            .write()
            .register("Test.hang", move |call: &mut Call<'_>| {
                let _ = entered.lock().send(());
                while !call.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            })
            .unwrap();
        let host = pair.host.clone();
        let caller =
            std::thread::spawn(move || call(&host, "Test.hang", b"", &CallOptions::timeout(Duration::from_secs(30))));
        started.recv_timeout(Duration::from_secs(10)).expect("the handler ran");
        pair.cell.close();
        let e = caller.join().unwrap().unwrap_err();
        assert!(matches!(e.status(), Status::PeerDead | Status::SessionClosed), "{e}");
    }

    /// A started call's short deadline is watched even while the standby sleeps until a
    /// much later one: registering the earlier deadline wakes it (and a later one, which
    /// it already wakes before, does not need to).
    #[test]
    fn a_short_deadline_started_after_a_long_one_still_ends_its_call() {
        let pair = Pair::new();
        pair.cell_methods
            .write()
            .register("Test.silent", |call: &mut Call<'_>| {
                call.wait_cancelled(Duration::from_secs(30));
                Ok(())
            })
            .unwrap();
        let start = |timeout: Duration| {
            let (done, ended) = std::sync::mpsc::channel::<()>();
            let done = parking_lot::Mutex::new(done);
            let id = wire::method_id("Test.silent");
            let pending = pair
                .host
                .call_start(
                    id,
                    None,
                    0,
                    copy_of(b""),
                    &CallOptions::timeout(timeout),
                    Box::new(move || {
                        let _ = done.lock().send(());
                    }),
                )
                .unwrap();
            (pending, ended)
        };
        let (_long, _) = start(Duration::from_secs(60));
        let (short, ended) = start(Duration::from_millis(50));
        ended.recv_timeout(Duration::from_secs(10)).expect("the standby expired the short call");
        assert_eq!(short.try_take().unwrap().unwrap_err().status(), Status::DeadlineExceeded);
    }
}
