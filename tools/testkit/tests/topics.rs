//! Publish/subscribe across processes, brokered by the host: the host publishes and test
//! cells subscribe; a cell publishes and the host and another cell subscribe; a
//! publisher's death ends its topic for its subscribers; a subscriber's death lets go of
//! its queue at the publisher; the host's access rules decide who may subscribe; hostile
//! subscribers (a forged position, garbage in their memory, samples named that they do
//! not hold) hurt only themselves and cannot write the topic.

mod common;

use std::time::Duration;

use cellshm::wire::{BodyReader, BodyWriter};
use cellshm::{CallOptions, Hub, HubConfig, LinkEnd, Peer, Status, TopicOptions, TopicPolicy};
use common::spawn_cell_on;

fn secs(n: u64) -> CallOptions {
    CallOptions::timeout(Duration::from_secs(n))
}

/// (received, missed, last seq, status that ended it early or 0).
fn read_reply(bytes: &[u8]) -> (u64, u64, u64, u32) {
    let mut r = BodyReader::new(bytes);
    (r.u64().unwrap(), r.u64().unwrap(), r.u64().unwrap(), r.u32().unwrap())
}

/// Starts `Topic.read` on `peer` on a thread of its own; its answer when it ends.
fn read_in_cell(
    peer: &Peer,
    name: &str,
    policy: TopicPolicy,
    count: u32,
) -> std::thread::JoinHandle<cellshm::Result<Vec<u8>>> {
    let (code, n) = policy.code();
    let body = BodyWriter::default().str(name).u32(code).u32(n).u32(count).finish();
    let peer = peer.clone();
    std::thread::spawn(move || peer.call("Topic.read", &body, &secs(60)).map(|r| r.bytes().to_vec()))
}

/// A sample that starts with its number.
fn numbered(seq: u64, size: usize) -> Vec<u8> {
    let mut sample = vec![0u8; size.max(8)];
    sample[..8].copy_from_slice(&seq.to_le_bytes());
    sample
}

#[test]
fn the_hosts_topic_reaches_block_subscribers_in_two_cells_in_order() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (a, mut child_a) = spawn_cell_on(&hub, "a", &[]);
    let (b, mut child_b) = spawn_cell_on(&hub, "b", &[]);
    let publisher =
        hub.publish("ticks", TopicOptions { sample_size: 256, depth: 8, ..TopicOptions::default() }).unwrap();
    const N: u32 = 20_000;
    let readers = [read_in_cell(&a, "ticks", TopicPolicy::Block, N), read_in_cell(&b, "ticks", TopicPolicy::Block, N)];
    // Both subscribed once a sample reaches both: publish the first when both are in.
    let watcher = hub.subscribe("ticks", TopicPolicy::DropOldest).unwrap();
    wait_for_subscribers(&hub, 3);
    for seq in 1..=N as u64 {
        publisher.publish(&numbered(seq, 64 + (seq % 150) as usize), Duration::from_secs(30)).unwrap();
    }
    for reader in readers {
        assert_eq!(read_reply(&reader.join().unwrap().unwrap()), (N as u64, 0, N as u64, 0));
    }
    drop(watcher);
    for child in [&mut child_a, &mut child_b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_block_subscriber_joining_while_the_publisher_waits_for_it_is_handed_the_memory() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (cell, mut child) = spawn_cell_on(&hub, "slow", &[]);
    // Depth 1: the first publish once the cell's subscription is attached fills its queue
    // and the next waits for the cell, which may not have been handed the topic's memory
    // yet (the publish used to hold the lock that handing it over takes: each round then
    // stalled until the publish's deadline).
    let publisher = hub.publish("one", TopicOptions { sample_size: 64, depth: 1, ..TopicOptions::default() }).unwrap();
    const N: u32 = 200;
    let mut seq = 1u64;
    for _ in 0..10 {
        let reader = read_in_cell(&cell, "one", TopicPolicy::Block, N);
        publisher.wait_for_subscribers(1, Duration::from_secs(20)).unwrap();
        let first = seq;
        for _ in 0..N {
            publisher.publish(&numbered(seq, 16), Duration::from_secs(30)).unwrap();
            seq += 1;
        }
        assert_eq!(read_reply(&reader.join().unwrap().unwrap()), (N as u64, 0, first + N as u64 - 1, 0));
        wait_for_subscribers(&hub, 0);
    }
    // A publish waiting on a Block subscriber that goes away goes on without it.
    let stuck = hub.subscribe("one", TopicPolicy::Block).unwrap();
    publisher.publish(&numbered(seq, 16), Duration::from_secs(5)).unwrap();
    let waiting = {
        let publisher = publisher.clone();
        std::thread::spawn(move || publisher.publish(&numbered(seq + 1, 16), Duration::from_secs(60)))
    };
    drop(stuck);
    assert_eq!(waiting.join().unwrap().unwrap(), seq + 1);
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (up to 20 s) until the hub's topics have `n` subscribers, the host's own
/// included: the cells subscribe on threads of their own.
fn wait_for_subscribers(hub: &Hub, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hub.topic_subscriptions() != n {
        assert!(std::time::Instant::now() < deadline, "{} subscribers, not {n}", hub.topic_subscriptions());
        std::thread::yield_now();
    }
}

#[test]
fn a_cells_topic_reaches_the_host_and_another_cell_and_ends_when_the_publisher_dies() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let (publisher, mut child_p) = spawn_cell_on(&hub, "sensor", &[]);
    let (reader, mut child_r) = spawn_cell_on(&hub, "reader", &[]);
    let open = BodyWriter::default().str("samples").u32(1024).u32(16).finish();
    publisher.call("Topic.open", &open, &secs(10)).unwrap();
    let e = hub.publish("samples", TopicOptions::default()).unwrap_err();
    assert_eq!(e.status(), Status::AlreadyExists, "{e}");
    let host = hub.subscribe("samples", TopicPolicy::Block).unwrap();
    let in_cell = read_in_cell(&reader, "samples", TopicPolicy::Block, 1_000_000);
    wait_for_subscribers(&hub, 2);
    let send = BodyWriter::default().str("samples").u32(500).u32(700).finish();
    let sending = {
        let publisher = publisher.clone();
        std::thread::spawn(move || publisher.call("Topic.send", &send, &secs(60)))
    };
    for seq in 1..=500u64 {
        let sample = host.recv(Duration::from_secs(30)).unwrap().expect("a sample");
        assert_eq!((sample.seq(), sample.missed()), (seq, 0));
        let bytes = sample.to_vec();
        assert_eq!((bytes.len(), u64::from_le_bytes(bytes[..8].try_into().unwrap())), (700, seq));
    }
    sending.join().unwrap().unwrap();
    // The publisher dies: both subscribers see the end (the cell's reader after the 500).
    child_p.kill().unwrap();
    let e = match host.recv(Duration::from_secs(10)) {
        Ok(Some(_)) => panic!("nothing more was sent"),
        Ok(None) => panic!("the publisher's death was not seen within 10 s"),
        Err(e) => e,
    };
    assert_eq!(e.status(), Status::PeerDead, "{e}");
    let (received, missed, last, ended) = read_reply(&in_cell.join().unwrap().unwrap());
    assert_eq!((received, missed, last, ended), (500, 0, 500, Status::PeerDead.code()));
    let _ = child_p.wait();
    let _ = child_r.kill();
    let _ = child_r.wait();
}

#[test]
fn a_dead_subscribers_queue_is_let_go_and_the_hosts_rules_decide_who_subscribes() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    hub.allow("topic:secret", &["trusted"]).unwrap();
    let (trusted, mut child_t) = spawn_cell_on(&hub, "trusted", &[]);
    let (other, mut child_o) = spawn_cell_on(&hub, "other", &[]);
    let publisher =
        hub.publish("secret", TopicOptions { sample_size: 64, depth: 4, ..TopicOptions::default() }).unwrap();
    let refused = read_in_cell(&other, "secret", TopicPolicy::Block, 1).join().unwrap().unwrap_err();
    assert_eq!(refused.status(), Status::PermissionDenied, "{refused}");
    // A Block subscriber that never reads holds the publisher...
    let stuck = read_in_cell(&trusted, "secret", TopicPolicy::Block, 1_000);
    wait_for_subscribers(&hub, 1);
    child_t.kill().unwrap();
    let _ = stuck.join();
    let _ = child_t.wait();
    // ... until it dies: then its queue is let go of and the publisher goes on.
    wait_for_subscribers(&hub, 0);
    for seq in 1..=20u64 {
        publisher.publish(&numbered(seq, 64), Duration::from_secs(5)).unwrap();
    }
    let _ = child_o.kill();
    let _ = child_o.wait();
}

#[test]
fn hostile_subscribers_hurt_only_themselves_and_cannot_write_the_topic() {
    let hub = Hub::create(HubConfig::default()).unwrap();
    let publisher =
        hub.publish("victim", TopicOptions { sample_size: 256, depth: 8, ..TopicOptions::default() }).unwrap();
    let mut honest = hub.subscribe("victim", TopicPolicy::Block).unwrap();
    let mut next_seq = 1u64;
    // 1: forges its read position ahead; 2: garbage over its whole memory; 3: names
    // samples it does not hold and lets go of one twice. Each also keeps two samples.
    for how in 1..=3u32 {
        let (liar, mut child) = spawn_cell_on(&hub, &format!("liar{how}"), &[]);
        let lying = {
            let body = BodyWriter::default().str("victim").u32(how).finish();
            std::thread::spawn(move || liar.call("Topic.lie", &body, &secs(60)).map(|r| r.bytes().to_vec()))
        };
        wait_for_subscribers(&hub, 2);
        const N: u64 = 5_000;
        let first = next_seq;
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::with_capacity(N as usize);
            for _ in 0..N {
                let sample = honest.recv(Duration::from_secs(30)).unwrap().expect("a sample within 30 s");
                assert_eq!(sample.missed(), 0);
                seen.push(u64::from_le_bytes(sample.to_vec()[..8].try_into().unwrap()));
            }
            (honest, seen)
        });
        for _ in 0..N {
            publisher.publish(&numbered(next_seq, 100), Duration::from_secs(30)).unwrap();
            next_seq += 1;
        }
        let (back, seen) = reader.join().unwrap();
        honest = back;
        assert_eq!(seen, (first..first + N).collect::<Vec<u64>>(), "the honest subscriber lost nothing ({how})");
        if how == 1 {
            // The liar may forge its position after the last of those: the publisher
            // sees the lie at its next look at that position, so publish until the liar
            // is detached (its call returns).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !lying.is_finished() && std::time::Instant::now() < deadline {
                publisher.publish(&numbered(next_seq, 100), Duration::from_secs(30)).unwrap();
                let sample = honest.recv(Duration::from_secs(30)).unwrap().expect("a sample within 30 s");
                assert_eq!(u64::from_le_bytes(sample.to_vec()[..8].try_into().unwrap()), next_seq);
                next_seq += 1;
            }
        }
        let reply = lying.join().unwrap().unwrap();
        let mut r = BodyReader::new(&reply);
        let (ended, writable) = (r.u32().unwrap(), r.u32().unwrap());
        assert_eq!(writable, 0, "a subscriber could write the topic's memory ({how})");
        if how == 1 {
            assert_eq!(ended, Status::ProtocolError.code(), "a forged position detaches the liar");
        }
        let _ = child.kill();
        let _ = child.wait();
        // The liar's subscription ends with it; the honest one goes on alone.
        wait_for_subscribers(&hub, 1);
        publisher.publish(&numbered(next_seq, 8), Duration::from_secs(5)).unwrap();
        let sample = honest.recv(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(u64::from_le_bytes(sample.to_vec()[..8].try_into().unwrap()), next_seq);
        next_seq += 1;
    }
}

#[test]
fn a_relaunched_publisher_publishes_again_and_its_subscribers_reattach_by_name() {
    use cellshm::{CellSpec, CellStatus, Supervisor};
    let supervisor = Supervisor::new(Hub::create(HubConfig::default()).unwrap()).unwrap();
    let spec = CellSpec::new("sensor", common::CELL)
        .args(["cell"])
        .env("CELLSHM_QUIET", "1")
        .env("TEST_CELL_PUBLISH", "readings");
    supervisor.add(spec).unwrap();
    let subscribe = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match supervisor.hub().subscribe("readings", TopicPolicy::Block) {
                Ok(subscriber) => return subscriber,
                Err(e) if e.status() == Status::NotFound && std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("subscribing: {e}"),
            }
        }
    };
    let read_ten = |subscriber: &cellshm::Subscriber| {
        let mut last = 0;
        for _ in 0..10 {
            let sample = subscriber.recv(Duration::from_secs(10)).unwrap().expect("a reading");
            let number = u64::from_le_bytes(sample.to_vec()[..8].try_into().unwrap());
            assert!(number == sample.seq() && number > last, "in order");
            last = number;
        }
    };
    let first = subscribe();
    read_ten(&first);
    // SIGKILL the publisher: its subscriber sees it die, the supervisor relaunches it.
    let pid = supervisor.peer("sensor").and_then(|p| p.pid()).expect("the sensor's pid");
    let killed = std::time::Instant::now();
    // SAFETY: kill(2) on a child process this test's supervisor started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let end = loop {
        match first.recv(Duration::from_secs(10)) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the publisher's death was not seen in 10 s"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.status(), Status::PeerDead, "{end}");
    eprintln!("a killed publisher's end seen after {:?}", killed.elapsed());
    // Ready again as a new process (the status may still say Ready for the old one).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(supervisor.status("sensor") == Some(CellStatus::Ready)
        && supervisor.peer("sensor").and_then(|p| p.pid()).is_some_and(|new| new != pid))
    {
        assert!(std::time::Instant::now() < deadline, "not relaunched: {:?}", supervisor.status("sensor"));
        std::thread::yield_now();
    }
    // The new instance publishes "readings" again; subscribing by name reaches it.
    let second = subscribe();
    read_ten(&second);
}
