//! Publish/subscribe side by side: cellshm topics (the host publishes, bench cells
//! subscribe) against iceoryx2's publish-subscribe (crates.io), both busy-polling, 64-byte
//! samples, processes apart. Latency is a ping-pong over two topics, halved (the one-way
//! time from publish to receive, as iceoryx2's own benchmark reports it); with 4
//! subscribers, one answers and three only read. The rate is samples a subscriber reads
//! per second while the publisher publishes as fast as its subscriber's queue lets it
//! (no sample lost: Block / RetryUntilDelivered).

use std::process::Command;
use std::time::{Duration, Instant};

use cellshm::wire::BodyWriter;
use cellshm::{
    CallOptions, Error, Hub, HubConfig, LinkEnd, Peer, PeerOptions, Status, TopicOptions, TopicPolicy, WaitStrategy,
};
use iceoryx2::prelude::*;

const SAMPLE: usize = 64;

fn topic_options() -> TopicOptions {
    TopicOptions { sample_size: SAMPLE as u32, depth: 16, max_subscribers: 8, ..TopicOptions::default() }
}

/// A hub with `n` bench cells. Their links to the host sleep (block): they carry only
/// the setup, and a spinning receiver would take the CPU the subscriber spins on.
fn cells(n: usize) -> Result<(Hub, Vec<(Peer, std::process::Child)>), Error> {
    let hub = Hub::create(HubConfig::default())?;
    let mut cells = Vec::new();
    for i in 0..n {
        let ticket =
            hub.add_peer(&format!("sub{i}"), PeerOptions { wait: WaitStrategy::Block, ..PeerOptions::default() })?;
        let mut command = Command::new(super::self_exe()?);
        command.arg("__cell").env("CELLSHM_WAIT", "block").env("CELLSHM_WORKERS", "2").env("CELLSHM_QUIET", "1");
        let (peer, child) = ticket.spawn(&mut command)?;
        peer.wait_ready(Duration::from_secs(10))?;
        cells.push((peer, child));
    }
    Ok((hub, cells))
}

fn stop(cells: Vec<(Peer, std::process::Child)>) {
    for (peer, mut child) in cells {
        peer.shutdown(Duration::from_secs(1));
        let _ = child.wait();
    }
}

/// Starts `Topic.echo` in each cell (the first answers on `pong` unless `answer` is
/// false), then waits until every cell subscribed.
fn start_echoes(
    hub: &Hub,
    cells: &[(Peer, std::process::Child)],
    count: usize,
    answer: bool,
) -> Result<Vec<std::thread::JoinHandle<cellshm::Result<()>>>, Error> {
    let handles: Vec<std::thread::JoinHandle<cellshm::Result<()>>> = cells
        .iter()
        .enumerate()
        .map(|(i, (peer, _))| {
            let pong = if i == 0 && answer { "pong" } else { "" };
            let body = BodyWriter::default().str("ping").str(pong).u32(count as u32).finish();
            let peer = peer.clone();
            std::thread::spawn(move || {
                peer.call("Topic.echo", &body, &CallOptions::timeout(Duration::from_secs(120))).map(drop)
            })
        })
        .collect();
    let started = Instant::now();
    while hub.topic_subscriptions() < cells.len() {
        if let Some(done) = handles.iter().position(|h: &std::thread::JoinHandle<_>| h.is_finished()) {
            let handles: Vec<_> = handles;
            let result = handles.into_iter().nth(done).map(|h| h.join());
            return Err(Error::new(Status::Internal, format!("a bench cell's Topic.echo ended early: {result:?}")));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(Error::new(Status::DeadlineExceeded, "the bench cells did not subscribe"));
        }
        std::thread::yield_now();
    }
    Ok(handles)
}

/// One-way latencies (half round trips) through `subscribers` cells.
pub fn cellshm_latency(subscribers: usize, iterations: usize) -> Result<Vec<u64>, Error> {
    let (hub, cells) = cells(subscribers)?;
    let warmup = iterations / 10;
    let ping = hub.publish("ping", topic_options())?;
    let echoes = start_echoes(&hub, &cells, warmup + iterations, true)?;
    let pong = loop {
        match hub.subscribe("pong", TopicPolicy::Block) {
            Ok(pong) => break pong,
            Err(e) if e.status() == Status::NotFound => std::thread::yield_now(),
            Err(e) => return Err(e),
        }
    };
    pong.set_wait(WaitStrategy::Spin);
    let sample = [7u8; SAMPLE];
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        if let Err(e) = ping.publish(&sample, Duration::from_secs(10)) {
            let ended: Vec<_> = echoes.into_iter().filter(|h| h.is_finished()).map(|h| h.join()).collect();
            return Err(e.context(format!("sample {i}; echoes ended: {ended:?}")));
        }
        let answer =
            pong.recv(Duration::from_secs(10))?.ok_or_else(|| Error::new(Status::DeadlineExceeded, "no pong"))?;
        drop(answer);
        if i >= warmup {
            samples.push(t.elapsed().as_nanos() as u64 / 2);
        }
    }
    for echo in echoes {
        echo.join().map_err(|_| Error::new(Status::Internal, "an echo thread panicked"))??;
    }
    drop((ping, pong));
    stop(cells);
    Ok(samples)
}

/// GB/s of 1 MiB samples one cell reads in place (its number, as the stream cases look
/// at their chunks' ends): the host writes each into a loaned slot (one memcpy), so
/// this is compared with one memcpy of 1 MiB.
pub fn cellshm_large_rate(count: usize) -> Result<f64, Error> {
    const LARGE: usize = 1 << 20;
    let (hub, cells) = cells(1)?;
    let options = TopicOptions { sample_size: LARGE as u32, depth: 4, max_subscribers: 1, ..TopicOptions::default() };
    let topic = hub.publish("large", options)?;
    let (peer, _) = &cells[0];
    let read = {
        let peer = peer.clone();
        let body = BodyWriter::default().str("large").u32(0).u32(0).u32(count as u32).finish();
        std::thread::spawn(move || peer.call("Topic.read", &body, &CallOptions::timeout(Duration::from_secs(120))))
    };
    topic.wait_for_subscribers(1, Duration::from_secs(20))?;
    let source = vec![7u8; LARGE];
    let started = Instant::now();
    for _ in 0..count {
        let mut loan = topic.loan(Duration::from_secs(10))?;
        let seq = loan.seq();
        let slot = loan.bytes_mut();
        slot.copy_from_slice(&source);
        slot[..8].copy_from_slice(&seq.to_le_bytes());
        loan.publish(LARGE)?;
    }
    let reply = read.join().map_err(|_| Error::new(Status::Internal, "the reading thread panicked"))??;
    let gbps = (count * LARGE) as f64 / started.elapsed().as_secs_f64() / 1e9;
    let received = reply.bytes().to_vec().get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if received != count as u64 {
        return Err(Error::new(Status::DataLoss, format!("the cell read {received} of {count} samples")));
    }
    drop(topic);
    stop(cells);
    Ok(gbps)
}

/// Samples per second one cell reads.
pub fn cellshm_rate(count: usize) -> Result<f64, Error> {
    let (hub, cells) = cells(1)?;
    let ping = hub.publish("ping", topic_options())?;
    let echoes = start_echoes(&hub, &cells, count, false)?;
    let sample = [7u8; SAMPLE];
    let started = Instant::now();
    for i in 0..count {
        if let Err(e) = ping.publish(&sample, Duration::from_secs(10)) {
            let ended: Vec<_> = echoes.into_iter().filter(|h| h.is_finished()).map(|h| h.join()).collect();
            return Err(e.context(format!("sample {i}; echoes ended: {ended:?}")));
        }
    }
    for echo in echoes {
        echo.join().map_err(|_| Error::new(Status::Internal, "an echo thread panicked"))??;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(ping);
    stop(cells);
    Ok(rate)
}

type Payload = [u8; SAMPLE];

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Status::Internal, format!("iceoryx2: {what}: {e}"))
}

fn node() -> Result<Node<ipc::Service>, Error> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().create::<ipc::Service>().map_err(|e| failed("creating a node", e))
}

fn service(
    node: &Node<ipc::Service>,
    name: &str,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Payload, ()>, Error> {
    let name: ServiceName = name.try_into().map_err(|e| failed("service name", e))?;
    node.service_builder(&name)
        .publish_subscribe::<Payload>()
        .max_subscribers(8)
        .subscriber_max_buffer_size(16)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(|e| failed("opening the service", e))
}

/// iceoryx2's child: `__iceoryx2-pubsub PING PONG COUNT` subscribes to PING and answers
/// each of COUNT samples on PONG (unless PONG is `-`), busy-polling; with PONG `-` and
/// the role `done`, it answers once, after the last.
pub fn iceoryx2_child(args: &[String]) -> Result<(), Error> {
    let [ping, pong, count, role] = args else {
        return Err(Error::new(Status::InvalidArgument, "usage: __iceoryx2-pubsub PING PONG COUNT echo|read|done"));
    };
    let count: usize = count.parse().map_err(|e| failed("count", e))?;
    let node = node()?;
    let subscriber = service(&node, ping)?.subscriber_builder().create().map_err(|e| failed("subscriber", e))?;
    let pong_service = service(&node, pong)?;
    // Only the one that answers publishes (a service takes 2 publishers by default).
    let publisher = match *role == "read" {
        true => None,
        false => Some(
            pong_service
                .publisher_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .map_err(|e| failed("publisher", e))?,
        ),
    };
    let mut seen = 0;
    while seen < count {
        match subscriber.receive().map_err(|e| failed("receiving", e))? {
            Some(sample) => {
                seen += 1;
                if let (Some(publisher), "echo") = (&publisher, role.as_str()) {
                    publisher.send_copy(*sample.payload()).map_err(|e| failed("answering", e))?;
                }
            }
            // As cellshm's readers: the one that answers spins, the others yield.
            None if role == "echo" => std::hint::spin_loop(),
            None => std::thread::yield_now(),
        }
    }
    if let (Some(publisher), "done") = (&publisher, role.as_str()) {
        publisher.send_copy([1u8; SAMPLE]).map_err(|e| failed("answering", e))?;
    }
    // Stay until the publisher has seen the answers (it drops the services first).
    let started = Instant::now();
    while pong_service.dynamic_config().number_of_subscribers() > 0 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Spawns iceoryx2 children on `ping`/`pong` and waits until they subscribed.
fn iceoryx2_children(
    ping: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Payload, ()>,
    names: (&str, &str),
    roles: &[&str],
    count: usize,
) -> Result<Vec<std::process::Child>, Error> {
    let mut children = Vec::new();
    for role in roles {
        let child = Command::new(super::self_exe()?)
            .args(["__iceoryx2-pubsub", names.0, names.1, &count.to_string(), role])
            .spawn()
            .map_err(|e| Error::system("spawning an iceoryx2 subscriber", e))?;
        children.push(child);
    }
    let started = Instant::now();
    while ping.dynamic_config().number_of_subscribers() < roles.len() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err(Error::new(Status::DeadlineExceeded, "the iceoryx2 subscribers did not start"));
        }
        std::thread::yield_now();
    }
    Ok(children)
}

/// iceoryx2's one-way latencies through `subscribers` processes (the first answers).
pub fn iceoryx2_latency(subscribers: usize, iterations: usize) -> Result<Vec<u64>, Error> {
    let names =
        (format!("cellshm-bench/ping/{}", std::process::id()), format!("cellshm-bench/pong/{}", std::process::id()));
    let node = node()?;
    let ping = service(&node, &names.0)?;
    let pong = service(&node, &names.1)?;
    let publisher = ping
        .publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|e| failed("publisher", e))?;
    let answers = pong.subscriber_builder().create().map_err(|e| failed("subscriber", e))?;
    let warmup = iterations / 10;
    let mut roles = vec!["echo"];
    roles.extend(std::iter::repeat_n("read", subscribers - 1));
    let children = iceoryx2_children(&ping, (&names.0, &names.1), &roles, warmup + iterations)?;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        publisher.send_copy([7u8; SAMPLE]).map_err(|e| failed("sending", e))?;
        while answers.receive().map_err(|e| failed("receiving", e))?.is_none() {
            std::hint::spin_loop();
        }
        if i >= warmup {
            samples.push(t.elapsed().as_nanos() as u64 / 2);
        }
    }
    drop(answers);
    for mut child in children {
        let _ = child.wait();
    }
    Ok(samples)
}

/// Samples per second one iceoryx2 subscriber reads.
pub fn iceoryx2_rate(count: usize) -> Result<f64, Error> {
    let names =
        (format!("cellshm-bench/rate/{}", std::process::id()), format!("cellshm-bench/done/{}", std::process::id()));
    let node = node()?;
    let ping = service(&node, &names.0)?;
    let done = service(&node, &names.1)?;
    let publisher = ping
        .publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|e| failed("publisher", e))?;
    let finished = done.subscriber_builder().create().map_err(|e| failed("subscriber", e))?;
    let children = iceoryx2_children(&ping, (&names.0, &names.1), &["done"], count)?;
    let started = Instant::now();
    for _ in 0..count {
        publisher.send_copy([7u8; SAMPLE]).map_err(|e| failed("sending", e))?;
    }
    while finished.receive().map_err(|e| failed("receiving", e))?.is_none() {
        std::hint::spin_loop();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(finished);
    for mut child in children {
        let _ = child.wait();
    }
    Ok(rate)
}
