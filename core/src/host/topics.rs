//! The host as the broker of publish/subscribe: the topics of a hub by name, who
//! publishes each (the host, or a cell whose memory it handed over), and every
//! subscription it brokered, so that a death ends what it must: a dead publisher's
//! topic ends for its subscribers (`cellshm.Topic.ended`), a dead subscriber's queue is
//! let go of at its publisher. The host publishes and subscribes itself through the same
//! memory its cells use (`runtime::topic`).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Hub, HubShared, Peer, PeerInner, PeerState};
use crate::builtin::topic::{encode_name, Leave, Subscribe, Subscribed};
use crate::error::{Error, Result};
use crate::link_end::LinkEnd;
use crate::proto::topic::TopicPolicy;
use crate::runtime::session::CallOptions;
use crate::runtime::sync::Mutex;
use crate::runtime::topic::{
    subscribe_locally, Publisher, PublisherShared, Subscriber, SubscriberShared, TopicOptions,
};
use crate::shm::topic::{map_topic, read_stats, TopicPublisher, TopicStats, TopicSubscriber, TOPIC_NAME_MAX};
use crate::wire::{builtin, Status};

/// How long the host waits for a publishing cell to attach a subscriber.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a notification to a cell (a subscriber left, a topic ended) may wait for room.
const NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);

/// Who publishes a topic.
#[derive(Clone)]
enum Owner {
    /// The host itself.
    Host(Weak<PublisherShared>),
    /// A cell.
    Cell(Weak<PeerInner>),
}

/// Who holds a subscription.
enum Holder {
    Host(Weak<SubscriberShared>),
    Cell(Weak<PeerInner>),
}

struct Brokered {
    owner: Owner,
    /// The topic's memory a publishing cell handed over (read-only), for its subscribers.
    memory: Option<File>,
    subscriptions: Vec<Subscription>,
}

/// A subscription the host brokered.
struct Subscription {
    /// Its index at the publisher and where it started: together, its name.
    index: u32,
    start: u64,
    holder: Holder,
    /// Its memory (read-only), for `inspect` of a topic a cell publishes.
    memory: Option<File>,
}

impl Brokered {
    fn alive(&self) -> bool {
        match &self.owner {
            Owner::Host(weak) => weak.strong_count() > 0,
            Owner::Cell(peer) => peer.upgrade().is_some_and(|p| !matches!(p.state(), PeerState::Dead(_))),
        }
    }
}

/// A hub's topics.
#[derive(Default)]
pub(crate) struct Topics {
    by_name: Mutex<HashMap<String, Brokered>>,
}

impl Topics {
    pub(crate) fn reports(&self) -> Vec<TopicReport> {
        let by_name = self.by_name.lock();
        let mut reports: Vec<TopicReport> = by_name
            .iter()
            .filter(|(_, t)| t.alive())
            .filter_map(|(name, topic)| {
                let (publisher, stats) = match (&topic.owner, &topic.memory) {
                    (Owner::Host(weak), _) => ("host".to_string(), weak.upgrade()?.memory.lock().stats()),
                    (Owner::Cell(peer), Some(memory)) => {
                        let known: Vec<(u32, &File)> = topic
                            .subscriptions
                            .iter()
                            .filter_map(|s| s.memory.as_ref().map(|m| (s.index, m)))
                            .collect();
                        (peer.upgrade()?.name.clone(), read_stats(memory, &known).ok()?)
                    }
                    (Owner::Cell(_), None) => return None,
                };
                let holders = stats
                    .subscriptions
                    .iter()
                    .map(|s| {
                        let holder = topic.subscriptions.iter().rev().find(|b| b.index == s.index);
                        // The host's own subscribers to its own topics are not brokered.
                        holder.and_then(|b| b.holder.name()).unwrap_or_else(|| "host".to_string())
                    })
                    .collect();
                Some(TopicReport { name: name.clone(), publisher, stats, holders })
            })
            .collect();
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        reports
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.len() <= TOPIC_NAME_MAX && !name.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::new(Status::InvalidArgument, format!("topic name {name:?}: 1 to 63 bytes, no control characters")))
    }
}

fn not_found(name: &str) -> Error {
    Error::new(Status::NotFound, format!("nobody publishes topic {name:?}"))
}

/// The access rule that admits a cell to a topic (`Hub::allow("topic:NAME", ..)`).
fn rule(name: &str) -> String {
    format!("topic:{name}")
}

/// The live `Arc` of a peer's record (a built-in is served with a reference to it).
fn arc_of(peer: &PeerInner) -> Option<Arc<PeerInner>> {
    peer.hub.peers.lock().live.iter().find(|p| p.id == peer.id && p.epoch == peer.epoch).cloned()
}

fn same(a: &Weak<PeerInner>, b: &PeerInner) -> bool {
    a.upgrade().is_some_and(|a| a.id == b.id && a.epoch == b.epoch)
}

/// Attaches a subscription (its memory `subscription`, read-only) to a topic a cell
/// publishes: hands the memory over and asks the cell (`cellshm.Topic.attach`).
fn attach_at_cell(
    publisher: &Arc<PeerInner>,
    name: &str,
    policy: TopicPolicy,
    subscription: &File,
) -> Result<Subscribed> {
    let peer = Peer { inner: publisher.clone() };
    let token = peer.inner.session()?.hand_over(subscription)?;
    let body = Subscribe { name: name.to_string(), policy, token }.encode();
    let reply = peer.call(builtin::TOPIC_ATTACH, &body, &CallOptions::timeout(ATTACH_TIMEOUT))?;
    Subscribed::decode(reply.bytes())
}

/// Tells a publishing cell a subscriber left (a notification: nothing to wait for).
fn detach_at_cell(publisher: &Weak<PeerInner>, name: &str, index: u32, start: u64) {
    if let Some(inner) = publisher.upgrade() {
        let body = Leave { name: name.to_string(), index, start }.encode();
        let _ = Peer { inner }.notify(builtin::TOPIC_DETACH, &body, &CallOptions::timeout(NOTIFY_TIMEOUT));
    }
}

/// Ends the subscription of `name` at `index` that started at `start`, at its publisher.
fn end_at_publisher(owner: &Owner, name: &str, index: u32, start: u64) {
    match owner {
        Owner::Host(weak) => {
            if let Some(publisher) = weak.upgrade() {
                publisher.end_subscription(index as usize, start, Status::Cancelled);
            }
        }
        Owner::Cell(peer) => detach_at_cell(peer, name, index, start),
    }
}

/// Tells a subscription's holder its topic ended.
fn tell_ended(name: &str, holder: &Holder, why: &Error) {
    match holder {
        Holder::Host(weak) => {
            if let Some(subscriber) = weak.upgrade() {
                subscriber.end(Error::new(why.status(), format!("topic {name:?}: {}", why.message())));
            }
        }
        Holder::Cell(peer) => {
            if let Some(inner) = peer.upgrade() {
                let options = CallOptions::timeout(NOTIFY_TIMEOUT);
                let _ = Peer { inner }.notify(builtin::TOPIC_ENDED, &encode_name(name), &options);
            }
        }
    }
}

/// A cell died: its topics end for their subscribers, its subscriptions end at their
/// publishers. What it must tell other cells goes out on a thread of its own: this runs
/// where the dead link failed, which must not wait on another link's ring.
pub(crate) fn peer_died(hub: &HubShared, peer: &PeerInner) {
    let (ended, left) = {
        let mut by_name = hub.topics.by_name.lock();
        let owned: Vec<String> = by_name
            .iter()
            .filter(|(_, t)| matches!(&t.owner, Owner::Cell(p) if same(p, peer) || p.strong_count() == 0))
            .map(|(name, _)| name.clone())
            .collect();
        let ended: Vec<(String, Brokered)> =
            owned.into_iter().filter_map(|name| by_name.remove(&name).map(|t| (name, t))).collect();
        let mut left = Vec::new();
        for (name, topic) in by_name.iter_mut() {
            topic.subscriptions.retain(|s| {
                let theirs = matches!(&s.holder, Holder::Cell(p) if same(p, peer) || p.strong_count() == 0);
                if theirs {
                    left.push((name.clone(), s.index, s.start, topic.owner.clone()));
                }
                !theirs
            });
        }
        (ended, left)
    };
    if ended.is_empty() && left.is_empty() {
        return;
    }
    let why = Error::new(Status::PeerDead, format!("the publisher (cell {}) died", peer.name));
    let tell = move || {
        for (name, topic) in &ended {
            for subscription in &topic.subscriptions {
                tell_ended(name, &subscription.holder, &why);
            }
        }
        for (name, index, start, owner) in left {
            end_at_publisher(&owner, &name, index, start);
        }
    };
    if let Err(e) = std::thread::Builder::new().name("cellshm-topics".into()).spawn(tell) {
        tracing::warn!("could not start a thread to end a dead cell's topics: {e}");
    }
}

/// `cellshm.Topic.create` from `peer`.
pub(crate) fn create_for_cell(peer: &PeerInner, create: crate::builtin::topic::Create) -> Result<()> {
    check_name(&create.name)?;
    super::HubView { shared: peer.hub.clone() }.check_access(&rule(&create.name), Some(&peer.identity()))?;
    let memory = peer.session()?.take_handed(create.token)?;
    map_topic(&memory)?;
    let arc = arc_of(peer).ok_or_else(|| Error::new(Status::Unavailable, "the cell is gone"))?;
    let mut by_name = peer.hub.topics.by_name.lock();
    if by_name.get(&create.name).is_some_and(Brokered::alive) {
        return Err(Error::new(Status::AlreadyExists, format!("topic {:?} is published already", create.name)));
    }
    let topic = Brokered { owner: Owner::Cell(Arc::downgrade(&arc)), memory: Some(memory), subscriptions: Vec::new() };
    by_name.insert(create.name, topic);
    Ok(())
}

/// `cellshm.Topic.close` from `peer`: its topic ends for the host's records (its
/// subscribers read what was queued, then see the close in the topic's memory).
pub(crate) fn close_for_cell(peer: &PeerInner, name: &str) {
    let mut by_name = peer.hub.topics.by_name.lock();
    if matches!(by_name.get(name).map(|t| &t.owner), Some(Owner::Cell(p)) if same(p, peer)) {
        by_name.remove(name);
    }
}

/// `cellshm.Topic.subscribe` from `peer`.
pub(crate) fn subscribe_for_cell(peer: &PeerInner, subscribe: Subscribe) -> Result<Subscribed> {
    let name = &subscribe.name;
    check_name(name)?;
    super::HubView { shared: peer.hub.clone() }.check_access(&rule(name), Some(&peer.identity()))?;
    let subscription = peer.session()?.take_handed(subscribe.token)?;
    let arc = arc_of(peer).ok_or_else(|| Error::new(Status::Unavailable, "the cell is gone"))?;
    let (attached, topic) = attach(&peer.hub, name, subscribe.policy, &subscription)?;
    if let Some(topic) = peer.hub.topics.by_name.lock().get_mut(name) {
        topic.subscriptions.push(Subscription {
            index: attached.index,
            start: attached.start,
            holder: Holder::Cell(Arc::downgrade(&arc)),
            memory: subscription.try_clone().ok(),
        });
    }
    let token = match peer.session().and_then(|s| s.hand_over(&topic)) {
        Ok(token) => token,
        Err(e) => {
            unsubscribe(&peer.hub, name, attached.index, attached.start);
            return Err(e);
        }
    };
    Ok(Subscribed { token, ..attached })
}

/// `cellshm.Topic.unsubscribe` from `peer`.
pub(crate) fn unsubscribe_for_cell(peer: &PeerInner, leave: Leave) {
    let held = peer.hub.topics.by_name.lock().get(&leave.name).is_some_and(|t| {
        t.subscriptions.iter().any(|s| {
            (s.index, s.start) == (leave.index, leave.start) && matches!(&s.holder, Holder::Cell(p) if same(p, peer))
        })
    });
    if held {
        unsubscribe(&peer.hub, &leave.name, leave.index, leave.start);
    }
}

/// Ends the subscription of `name` at `index` that started at `start`, at its
/// publisher, and forgets it.
fn unsubscribe(hub: &HubShared, name: &str, index: u32, start: u64) {
    let owner = {
        let mut by_name = hub.topics.by_name.lock();
        let Some(topic) = by_name.get_mut(name) else { return };
        topic.subscriptions.retain(|s| (s.index, s.start) != (index, start));
        topic.owner.clone()
    };
    end_at_publisher(&owner, name, index, start);
}

/// Attaches the subscription whose memory is `subscription` to topic `name`, wherever it
/// is published; where it starts, and the topic's memory for the subscriber.
fn attach(hub: &HubShared, name: &str, policy: TopicPolicy, subscription: &File) -> Result<(Subscribed, File)> {
    enum Found {
        Host(Publisher),
        Cell(Arc<PeerInner>, File),
    }
    let found = {
        let by_name = hub.topics.by_name.lock();
        match by_name.get(name).filter(|t| t.alive()) {
            Some(Brokered { owner: Owner::Host(weak), .. }) => {
                weak.upgrade().map(|shared| Found::Host(Publisher { shared }))
            }
            Some(Brokered { owner: Owner::Cell(peer), memory: Some(memory), .. }) => {
                match (peer.upgrade(), memory.try_clone()) {
                    (Some(peer), Ok(memory)) => Some(Found::Cell(peer, memory)),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    match found.ok_or_else(|| not_found(name))? {
        Found::Host(publisher) => {
            let memory = publisher.shared.share()?;
            let (index, start) = publisher.shared.attach(subscription, policy)?;
            Ok((Subscribed { index: index as u32, start, token: 0 }, memory))
        }
        Found::Cell(peer, memory) => Ok((attach_at_cell(&peer, name, policy, subscription)?, memory)),
    }
}

/// A topic of a hub as `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicReport {
    /// The topic's name.
    pub name: String,
    /// "host", or the publishing cell's name.
    pub publisher: String,
    /// What its memory says.
    pub stats: TopicStats,
    /// Who holds each of `stats.subscriptions`, in their order: "host" or a cell's name.
    pub holders: Vec<String>,
}

impl Holder {
    fn name(&self) -> Option<String> {
        match self {
            Holder::Host(weak) => (weak.strong_count() > 0).then(|| "host".to_string()),
            Holder::Cell(peer) => peer.upgrade().map(|p| p.name.clone()),
        }
    }
}

impl Hub {
    /// Every live topic of the hub with its numbers: samples published, and per
    /// subscription its policy, lag (queued, unread), drops and what the subscriber
    /// counted. Read from the topics' memory; nothing is written.
    pub fn topics(&self) -> Vec<TopicReport> {
        self.shared.topics.reports()
    }

    /// Subscriptions the hub brokered to its topics and that live now (the host's own
    /// included), for tests and `inspect`.
    pub fn topic_subscriptions(&self) -> usize {
        let by_name = self.shared.topics.by_name.lock();
        by_name
            .values()
            .map(|t| match &t.owner {
                Owner::Host(weak) => weak.upgrade().map_or(0, |p| p.memory.lock().attached()),
                Owner::Cell(_) => t.subscriptions.len(),
            })
            .sum()
    }

    /// Creates topic `name`, published by the host: ALREADY_EXISTS while another of that
    /// name lives, INVALID_ARGUMENT for options out of range. Dropping the publisher
    /// (every clone) closes the topic.
    pub fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher> {
        check_name(name)?;
        let mut by_name = self.shared.topics.by_name.lock();
        if by_name.get(name).is_some_and(Brokered::alive) {
            return Err(Error::new(Status::AlreadyExists, format!("topic {name:?} is published already")));
        }
        let publisher = Publisher::new(name, TopicPublisher::create(name, options.geometry())?)?;
        let topic =
            Brokered { owner: Owner::Host(Arc::downgrade(&publisher.shared)), memory: None, subscriptions: Vec::new() };
        by_name.insert(name.to_string(), topic);
        let (hub, topic) = (Arc::downgrade(&self.shared), name.to_string());
        let ours = Arc::downgrade(&publisher.shared);
        *publisher.shared.on_close.lock() = Some(Box::new(move || {
            let Some(hub) = hub.upgrade() else { return };
            let mut by_name = hub.topics.by_name.lock();
            // Only this topic's entry: the name may have been published again since.
            if matches!(by_name.get(&topic).map(|t| &t.owner), Some(Owner::Host(weak)) if weak.ptr_eq(&ours)) {
                by_name.remove(&topic);
            }
        }));
        Ok(publisher)
    }

    /// Subscribes the host to topic `name` (published by the host or by a cell) with
    /// `policy`: NOT_FOUND while nobody publishes it, RESOURCE_EXHAUSTED when it has its
    /// most subscribers.
    pub fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber> {
        check_name(name)?;
        let local = {
            let by_name = self.shared.topics.by_name.lock();
            match by_name.get(name).map(|t| &t.owner) {
                Some(Owner::Host(weak)) => weak.upgrade().map(|shared| Publisher { shared }),
                _ => None,
            }
        };
        if let Some(publisher) = local {
            return subscribe_locally(&publisher, policy);
        }
        let builder = TopicSubscriber::prepare()?;
        let own = builder.share()?;
        let (attached, topic) = attach(&self.shared, name, policy, &own)?;
        let subscriber = match builder.attached(&topic, attached.index as usize, attached.start) {
            Ok(memory) => Subscriber::new(name, memory),
            Err(e) => {
                unsubscribe(&self.shared, name, attached.index, attached.start);
                return Err(e);
            }
        };
        if let Some(t) = self.shared.topics.by_name.lock().get_mut(name) {
            let holder = Holder::Host(Arc::downgrade(&subscriber.shared));
            t.subscriptions.push(Subscription {
                index: attached.index,
                start: attached.start,
                holder,
                memory: Some(own),
            });
        }
        let (hub, topic) = (Arc::downgrade(&self.shared), name.to_string());
        let (index, start) = (attached.index, attached.start);
        *subscriber.shared.on_close.lock() = Some(Box::new(move || {
            if let Some(hub) = hub.upgrade() {
                unsubscribe(&hub, &topic, index, start);
            }
        }));
        Ok(subscriber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::HubConfig;
    use std::time::Duration;

    #[test]
    fn the_host_publishes_and_subscribes_through_the_topics_memory() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let options = TopicOptions { sample_size: 1024, depth: 4, history: 2, ..TopicOptions::default() };
        let publisher = hub.publish("config", options).unwrap();
        assert_eq!(hub.publish("config", options).unwrap_err().status(), Status::AlreadyExists);
        assert_eq!(hub.subscribe("nothing", TopicPolicy::Block).unwrap_err().status(), Status::NotFound);
        assert_eq!(hub.publish("", options).unwrap_err().status(), Status::InvalidArgument);
        publisher.publish(b"before anyone", Duration::from_secs(1)).unwrap();
        let block = hub.subscribe("config", TopicPolicy::Block).unwrap();
        let newest = hub.subscribe("config", TopicPolicy::DropNewest).unwrap();
        publisher.wait_for_subscribers(2, Duration::ZERO).unwrap();
        let e = publisher.wait_for_subscribers(3, Duration::from_millis(5)).unwrap_err();
        assert_eq!(
            (e.status(), e.message()),
            (Status::DeadlineExceeded, r#"topic "config": 2 subscribers attached, not 3"#)
        );
        let big = vec![5u8; 1000];
        publisher.publish(&big, Duration::from_secs(1)).unwrap();
        let mut loan = publisher.loan(Duration::from_secs(1)).unwrap();
        loan.bytes_mut()[..3].copy_from_slice(b"abc");
        assert_eq!(loan.publish(3).unwrap(), 3);
        // No limit is a timeout like any other.
        let forever = hub.subscribe("config", TopicPolicy::DropOldest).unwrap();
        assert_eq!(forever.recv(crate::FOREVER).unwrap().unwrap().seq(), 2, "the history's first");
        drop(forever);
        for subscriber in [&block, &newest] {
            let history = subscriber.recv(Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!((history.seq(), history.to_vec()), (1, b"before anyone".to_vec()));
            let sample = subscriber.recv(Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!((sample.seq(), sample.missed(), sample.to_vec()), (2, 0, big.clone()));
            drop(sample);
            assert_eq!(subscriber.recv(Duration::from_secs(1)).unwrap().unwrap().to_vec(), b"abc");
            assert!(subscriber.try_recv().unwrap().is_none());
        }
        let too_big = vec![0u8; 2000];
        assert_eq!(publisher.publish(&too_big, Duration::ZERO).unwrap_err().status(), Status::InvalidArgument);
        // The Block subscriber's full queue holds the publisher to its timeout.
        for _ in 0..4 {
            publisher.publish(b"fill", Duration::from_secs(1)).unwrap();
        }
        let e = publisher.publish(b"one more", Duration::from_millis(10)).unwrap_err();
        assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
        // Unsubscribing (drop) lets it go on; closing ends the topic after what was queued.
        drop(block);
        publisher.publish(b"last", Duration::from_secs(1)).unwrap();
        drop(publisher);
        let mut seen = Vec::new();
        let end = loop {
            match newest.recv(Duration::from_secs(1)) {
                Ok(Some(sample)) => seen.push(sample.to_vec()),
                Ok(None) => panic!("the close was not seen"),
                Err(e) => break e,
            }
        };
        assert_eq!(end.status(), Status::Unavailable, "{end}");
        assert_eq!(seen.len(), 4, "drop-newest kept its queue's 4 and lost the rest");
        assert_eq!(newest.dropped(), 1);
        // The name is free again.
        hub.publish("config", options).unwrap();
    }

    #[test]
    fn a_block_subscriber_on_another_thread_gets_every_sample_in_order() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let options = TopicOptions { sample_size: 64, depth: 8, ..TopicOptions::default() };
        let publisher = hub.publish("samples", options).unwrap();
        let block = hub.subscribe("samples", TopicPolicy::Block).unwrap();
        let oldest = hub.subscribe("samples", TopicPolicy::DropOldest).unwrap();
        const N: u64 = 50_000;
        let reader = std::thread::spawn(move || {
            let mut next = 1;
            while next <= N {
                let sample = block.recv(Duration::from_secs(20)).unwrap().expect("a sample within 20 s");
                assert_eq!((sample.seq(), sample.missed()), (next, 0));
                let bytes = sample.to_vec();
                assert_eq!(bytes.len(), 64);
                assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()), next);
                next += 1;
            }
        });
        let mut sample = [0u8; 64];
        for seq in 1..=N {
            sample[..8].copy_from_slice(&seq.to_le_bytes());
            assert_eq!(publisher.publish(&sample, Duration::from_secs(20)).unwrap(), seq);
        }
        reader.join().unwrap();
        // The drop-oldest subscriber that never read holds the newest queue's worth, and
        // saw the rest go.
        let first = oldest.try_recv().unwrap().unwrap();
        assert_eq!((first.seq(), first.missed()), (N - 7, N - 8));
    }

    #[test]
    fn a_loan_moves_to_another_thread_and_holds_other_publishes_until_it_is_published() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let publisher = hub.publish("loans", TopicOptions { sample_size: 256, ..TopicOptions::default() }).unwrap();
        let subscriber = hub.subscribe("loans", TopicPolicy::Block).unwrap();
        let mut loan = publisher.loan(Duration::from_secs(1)).unwrap();
        assert_eq!(loan.seq(), 1);
        // Another loan, or a publish, waits for this one: its timeout runs out first.
        let e = publisher.publish(b"meanwhile", Duration::from_millis(5)).unwrap_err();
        assert_eq!(e.status(), Status::DeadlineExceeded, "{e}");
        loan.bytes_mut()[..5].copy_from_slice(b"first");
        let (ready, go) = std::sync::mpsc::channel();
        let waiting = {
            let publisher = publisher.clone();
            std::thread::spawn(move || {
                ready.send(()).unwrap();
                publisher.publish(b"second", Duration::from_secs(20)).unwrap()
            })
        };
        go.recv().unwrap();
        let elsewhere = std::thread::spawn(move || loan.publish(5).unwrap());
        assert_eq!(elsewhere.join().unwrap(), 1);
        assert_eq!(waiting.join().unwrap(), 2, "the waiting publish came after the loan");
        assert_eq!(subscriber.recv(Duration::from_secs(1)).unwrap().unwrap().to_vec(), b"first");
        assert_eq!(subscriber.recv(Duration::from_secs(1)).unwrap().unwrap().to_vec(), b"second");
        // A loan given back unpublished (dropped, or published too long) frees the way.
        let loan = publisher.loan(Duration::from_secs(1)).unwrap();
        assert_eq!(loan.publish(257).unwrap_err().status(), Status::InvalidArgument);
        drop(publisher.loan(Duration::from_secs(1)).unwrap());
        assert_eq!(publisher.publish(b"third", Duration::from_secs(1)).unwrap(), 3);
    }

    #[test]
    fn an_async_subscriber_is_woken_by_each_publish_and_its_stream_ends_with_the_topic() {
        use futures_core::Stream;
        let hub = Hub::create(HubConfig::default()).unwrap();
        let publisher =
            hub.publish("async", TopicOptions { sample_size: 64, depth: 4, ..TopicOptions::default() }).unwrap();
        let mut subscriber = hub.subscribe("async", TopicPolicy::Block).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let writer = std::thread::spawn(move || {
            for seq in 1..=1000u64 {
                publisher.publish(&seq.to_le_bytes(), Duration::from_secs(20)).unwrap();
            }
        });
        runtime.block_on(async {
            let mut seen = 0u64;
            while let Some(sample) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut subscriber).poll_next(cx)).await
            {
                let sample = sample.unwrap();
                seen += 1;
                assert_eq!((sample.seq(), sample.to_vec()), (seen, seen.to_le_bytes().to_vec()));
            }
            assert_eq!(seen, 1000, "the stream ended once the closed topic's samples were read");
        });
        writer.join().unwrap();
    }

    #[test]
    fn the_hub_reports_each_topic_with_its_subscriptions_lag_and_drops() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let publisher =
            hub.publish("stats", TopicOptions { sample_size: 64, depth: 16, ..TopicOptions::default() }).unwrap();
        let oldest = hub.subscribe("stats", TopicPolicy::DropOldest).unwrap();
        let _newest = hub.subscribe("stats", TopicPolicy::DropNewest).unwrap();
        let reader = hub.subscribe("stats", TopicPolicy::DisconnectAfter(16)).unwrap();
        for seq in 1..=20u64 {
            publisher.publish(&seq.to_le_bytes(), Duration::from_secs(1)).unwrap();
            drop(reader.try_recv().unwrap());
        }
        drop(oldest.try_recv().unwrap());
        let reports = hub.topics();
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!((report.name.as_str(), report.publisher.as_str()), ("stats", "host"));
        assert_eq!((report.stats.published, report.stats.depth, report.stats.closed), (20, 16, false));
        assert_eq!(report.holders, ["host", "host", "host"]);
        let by_policy = |policy| report.stats.subscriptions.iter().find(|s| s.policy == policy).unwrap();
        let o = by_policy(TopicPolicy::DropOldest);
        assert_eq!((o.queued, o.dropped, o.received, o.missed), (15, 4, Some(1), Some(4)));
        let n = by_policy(TopicPolicy::DropNewest);
        assert_eq!((n.queued, n.dropped, n.received, n.missed), (16, 4, Some(0), Some(0)));
        let r = by_policy(TopicPolicy::DisconnectAfter(16));
        assert_eq!((r.queued, r.dropped, r.received), (0, 0, Some(20)));
        drop(publisher);
        assert!(hub.topics().is_empty(), "a closed topic is gone from the report");
    }

    #[test]
    fn a_last_value_topic_gives_the_newest_value_and_events_coalesce_without_slots() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let board = hub.publish("board", TopicOptions::last_value(256)).unwrap();
        for value in 1..=5u64 {
            board.publish(&value.to_le_bytes().repeat(8), Duration::ZERO).unwrap();
        }
        let reader = hub.subscribe("board", TopicPolicy::DropOldest).unwrap();
        let current = reader.latest().unwrap().expect("the current value at once");
        assert_eq!((current.seq(), current.missed(), current.to_vec()), (5, 0, 5u64.to_le_bytes().repeat(8)));
        drop(current);
        assert!(reader.latest().unwrap().is_none(), "nothing new");
        for value in 6..=8u64 {
            board.publish(&value.to_le_bytes().repeat(8), Duration::ZERO).unwrap();
        }
        let current = reader.latest().unwrap().unwrap();
        assert_eq!((current.seq(), current.missed()), (8, 2), "the newest, standing for the two before it");
        drop(current);
        // Events: 8 bytes or none, coalesced while nobody reads, never waiting.
        let events = hub.publish("ticks", TopicOptions::events()).unwrap();
        let waiter = hub.subscribe("ticks", TopicPolicy::DropOldest).unwrap();
        for tick in 1..=3u64 {
            events.publish(&tick.to_le_bytes(), Duration::ZERO).unwrap();
        }
        let event = waiter.recv(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!((event.seq(), event.missed(), event.to_vec()), (3, 2, 3u64.to_le_bytes().to_vec()));
        events.publish(b"", Duration::ZERO).unwrap();
        assert_eq!(waiter.recv(Duration::from_secs(1)).unwrap().unwrap().bytes().len(), 0);
        assert_eq!(events.publish(&[0u8; 9], Duration::ZERO).unwrap_err().status(), Status::InvalidArgument);
        drop(board);
        assert_eq!(reader.latest().unwrap_err().status(), Status::Unavailable);
    }

    #[test]
    fn a_wait_set_wakes_for_whichever_subscriber_gets_a_sample_or_ends() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let a = hub.publish("a", TopicOptions::default()).unwrap();
        let b = hub.publish("b", TopicOptions::default()).unwrap();
        let (sub_a, sub_b) =
            (hub.subscribe("a", TopicPolicy::Block).unwrap(), hub.subscribe("b", TopicPolicy::Block).unwrap());
        let mut set = crate::WaitSet::new();
        let (ia, ib) = (set.add(&sub_a), set.add(&sub_b));
        assert!(set.wait(Duration::from_millis(5)).is_empty(), "nothing yet");
        // A publish from another thread, once the set sleeps, wakes it for that
        // subscriber only.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !sub_b.shared.memory.lock().is_parked() {
                    std::thread::yield_now();
                }
                b.publish(b"to b", Duration::from_secs(1)).unwrap();
            });
            assert_eq!(set.wait(Duration::from_secs(20)), [ib]);
        });
        assert_eq!(sub_b.try_recv().unwrap().unwrap().to_vec(), b"to b");
        while sub_b.try_recv().unwrap().is_some() {}
        a.publish(b"to a", Duration::from_secs(1)).unwrap();
        assert_eq!(set.wait(Duration::ZERO), [ia], "a sample queued before the wait is ready at once");
        assert_eq!(sub_a.try_recv().unwrap().unwrap().to_vec(), b"to a");
        drop(b);
        assert_eq!(set.wait(Duration::from_secs(20)), [ib], "an end is ready too");
        assert_eq!(sub_b.try_recv().unwrap_err().status(), Status::Unavailable);
    }
}
