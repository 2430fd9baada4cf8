//! loom models of the session's call/answer path, built from the parts the session
//! itself runs: the link's table (`proto::link::Link`) behind the sync facade's mutex,
//! the caller's `Waiter` and its level-triggered kick, and the frames `proto::frames`
//! builds. What is left out is the ring and the doorbell (modelled by their own loom
//! tests in `shm::ring` and `runtime::lease`): here the peer's answer is handed over
//! through a mutex-protected queue, rung like the doorbell.
//!
//! The rules checked, in every interleaving:
//! - the caller always wakes up (a lost wakeup is a deadlock loom reports);
//! - a call ends exactly once: by its answer, by its caller giving up, or by the link
//!   failing, never two of them, and a result delivered is the one the caller takes;
//! - an answer to a call that gave up is discarded, not a protocol violation.

use std::collections::VecDeque;
use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;
use crate::proto::frames;
use crate::proto::link::{Answer, Inbound, Link, Timer};
use crate::runtime::sync::{Bell, Mutex};
use crate::runtime::waiter::Waiter;
use crate::shm::Side;
use crate::wire::{Descriptor, Status};

type CallWaiter = Waiter<Result<u32, Status>, Bell>;
type TestLink = Link<Arc<CallWaiter>, ()>;

/// What sits between the two sides: the frames in flight and the bell that says so.
#[derive(Default)]
struct Wire {
    frames: Mutex<VecDeque<Descriptor>>,
    bell: Bell,
}

impl Wire {
    fn send(&self, d: Descriptor) {
        self.frames.lock().push_back(d);
        self.bell.ring();
    }

    fn receive(&self) -> Descriptor {
        loop {
            if let Some(d) = self.frames.lock().pop_front() {
                return d;
            }
            self.bell.wait();
        }
    }
}

/// The other side and our receiving thread together: take the request, answer it, and
/// route the answer through the link's table to its waiter.
fn answer_one(to_peer: &Wire, link: &Mutex<TestLink>, completions: &AtomicUsize) {
    let request = to_peer.receive();
    let response = frames::response(&request, None);
    let routed = link.lock().handle_frame(&response);
    match routed {
        Inbound::Deliver(waiter) => {
            completions.fetch_add(1, Ordering::SeqCst);
            waiter.complete(Ok(7));
        }
        Inbound::Discard => {}
        _ => panic!("an answer is delivered or discarded"),
    }
}

/// The caller's start: register, then send the request.
fn start(link: &Mutex<TestLink>, to_peer: &Wire, waiter: &Arc<CallWaiter>) -> u64 {
    let msg_id = link.lock().start_call(waiter.clone(), Answer::Response, 0, Timer::Caller).expect("open link");
    let mut request = frames::request(42, 0);
    request.msg_id = msg_id;
    to_peer.send(request);
    msg_id
}

/// The caller's wait: check, sleep on its own kick, check again.
fn wait(waiter: &CallWaiter, kick: &Bell) -> Result<u32, Status> {
    while !waiter.is_done() {
        waiter.sleep_unless_done(|| kick.wait());
    }
    waiter.take().expect("taken once")
}

/// One call and everything around it.
struct Scene {
    link: Arc<Mutex<TestLink>>,
    to_peer: Arc<Wire>,
    completions: Arc<AtomicUsize>,
    kick: Arc<Bell>,
    waiter: Arc<CallWaiter>,
}

impl Scene {
    fn new() -> Scene {
        let kick = Arc::new(Bell::default());
        Scene {
            link: Arc::new(Mutex::new(TestLink::new(Side::Cell, "model", 4))),
            to_peer: Arc::new(Wire::default()),
            completions: Arc::new(AtomicUsize::new(0)),
            waiter: Arc::new(CallWaiter::new(Some(kick.clone()))),
            kick,
        }
    }

    /// The peer and our receiving thread, on a thread of their own.
    fn answering(&self) -> loom::thread::JoinHandle<()> {
        let (link, to_peer, completions) = (self.link.clone(), self.to_peer.clone(), self.completions.clone());
        loom::thread::spawn(move || answer_one(&to_peer, &link, &completions))
    }

    fn start(&self) -> u64 {
        start(&self.link, &self.to_peer, &self.waiter)
    }

    fn wait(&self) -> Result<u32, Status> {
        wait(&self.waiter, &self.kick)
    }

    fn completions(&self) -> usize {
        self.completions.load(Ordering::SeqCst)
    }
}

#[test]
fn loom_a_call_waits_for_its_answer_and_wakes_once_it_is_in() {
    loom::model(|| {
        let scene = Scene::new();
        let peer = scene.answering();
        scene.start();
        assert_eq!(scene.wait(), Ok(7));
        peer.join().unwrap();
        assert_eq!(scene.completions(), 1);
    });
}

#[test]
fn loom_a_caller_giving_up_races_its_answer_and_the_call_ends_once() {
    loom::model(|| {
        let scene = Scene::new();
        let peer = scene.answering();
        let msg_id = scene.start();
        // The deadline passed: give up, unless the answer took the call first (then its
        // result is being written, and is the call's end).
        let gave_up = scene.link.lock().give_up(msg_id, true).is_some();
        if !gave_up {
            assert_eq!(scene.wait(), Ok(7));
        }
        peer.join().unwrap();
        assert_eq!(scene.completions(), usize::from(!gave_up), "exactly one ends it");
        if gave_up {
            assert!(!scene.waiter.is_done(), "nobody completes a call its caller gave up");
            assert!(scene.link.lock().poll_transmit().is_some(), "the peer is owed a CANCEL");
        }
    });
}

#[test]
fn loom_a_link_failing_while_the_answer_arrives_ends_the_call_once_and_wakes_the_caller() {
    loom::model(|| {
        let scene = Scene::new();
        scene.start();
        let peer = scene.answering();
        let failer = {
            let (link, completions) = (scene.link.clone(), scene.completions.clone());
            loom::thread::spawn(move || {
                let (waiters, _) = link.lock().fail(Error::new(Status::PeerDead, "gone"));
                for waiter in waiters {
                    completions.fetch_add(1, Ordering::SeqCst);
                    waiter.complete(Err(Status::PeerDead));
                }
            })
        };
        let result = scene.wait();
        peer.join().unwrap();
        failer.join().unwrap();
        assert!(matches!(result, Ok(7) | Err(Status::PeerDead)), "{result:?}");
        assert_eq!(scene.completions(), 1, "exactly one ends it");
    });
}
