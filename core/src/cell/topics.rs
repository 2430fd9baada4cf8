//! A cell's topics: the ones it publishes (the host attaches subscribers to them with
//! `cellshm.Topic.attach`) and the ones it subscribes to (the host tells it when their
//! publisher is gone), brokered by the host (`host/topics.rs`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use super::Cell;
use crate::builtin::topic::{encode_name, Create, Leave, Subscribe, Subscribed};
use crate::error::{Error, Result};
use crate::link_end::LinkEnd;
use crate::proto::topic::TopicPolicy;
use crate::runtime::session::{CallOptions, Session};
use crate::runtime::sync::Mutex;
use crate::runtime::topic::{Publisher, PublisherShared, Subscriber, SubscriberShared, TopicOptions};
use crate::shm::topic::{TopicPublisher, TopicSubscriber};
use crate::wire::{builtin, Status};

/// How long asking the host to broker a topic may take.
const BROKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long telling the host a topic or subscription ended may wait for room.
const NOTIFY_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Default)]
pub(super) struct CellTopics {
    /// The link (set once it exists): where descriptors are handed over.
    pub(super) session: OnceLock<Weak<Session>>,
    publishers: Mutex<HashMap<String, Weak<PublisherShared>>>,
    subscribers: Mutex<Vec<(String, Weak<SubscriberShared>)>>,
}

impl CellTopics {
    fn session(&self) -> Result<Arc<Session>> {
        self.session
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Error::new(Status::SessionClosed, "the link to the host is closed"))
    }

    /// `cellshm.Topic.attach`: the host attaches a subscriber to a topic this cell publishes.
    pub(super) fn attach(&self, attach: Subscribe) -> Result<Subscribed> {
        let publisher = self.publishers.lock().get(&attach.name).and_then(Weak::upgrade);
        let publisher = publisher
            .ok_or_else(|| Error::new(Status::NotFound, format!("this cell publishes no topic {:?}", attach.name)))?;
        let subscription = self.session()?.take_handed(attach.token)?;
        let (index, start) = publisher.attach(&subscription, attach.policy)?;
        Ok(Subscribed { index: index as u32, start, token: 0 })
    }

    /// `cellshm.Topic.detach`: a subscriber left.
    pub(super) fn detach(&self, leave: Leave) {
        if let Some(publisher) = self.publishers.lock().get(&leave.name).and_then(Weak::upgrade) {
            publisher.end_subscription(leave.index as usize, leave.start, Status::Cancelled);
        }
    }

    /// `cellshm.Topic.ended`: the publisher of `name` is gone.
    pub(super) fn ended(&self, name: &str) {
        let why = Error::new(Status::PeerDead, format!("topic {name:?}: its publisher died"));
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|(_, weak)| weak.strong_count() > 0);
        for (_, subscriber) in subscribers.iter().filter(|(n, _)| n == name) {
            if let Some(subscriber) = subscriber.upgrade() {
                subscriber.end(why.clone());
            }
        }
    }
}

impl Cell {
    /// Publishes topic `name` through the host (which brokers its subscribers, the host
    /// and other cells alike, under its access rules for `"topic:NAME"`). ALREADY_EXISTS
    /// while another publisher of that name lives; PERMISSION_DENIED if the host's rules
    /// do not admit this cell. Dropping the publisher closes the topic.
    pub fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher> {
        let topics = &self.state.topics;
        let publisher = Publisher::new(name, TopicPublisher::create(name, options.geometry())?)?;
        {
            let mut publishers = topics.publishers.lock();
            if publishers.get(name).is_some_and(|p| p.strong_count() > 0) {
                return Err(Error::new(Status::AlreadyExists, format!("this cell publishes topic {name:?} already")));
            }
            publishers.insert(name.to_string(), Arc::downgrade(&publisher.shared));
        }
        let created = (|| {
            let memory = publisher.shared.share()?;
            let token = self.session.hand_over(&memory)?;
            let body = Create { name: name.to_string(), options, token }.encode();
            self.call(builtin::TOPIC_CREATE, &body, &CallOptions::timeout(BROKER_TIMEOUT)).map(drop)
        })();
        if let Err(e) = created {
            topics.publishers.lock().remove(name);
            return Err(e);
        }
        let (session, topic) = (Arc::downgrade(&self.session), name.to_string());
        let state = Arc::downgrade(&self.state);
        *publisher.shared.on_close.lock() = Some(Box::new(move || {
            if let Some(state) = state.upgrade() {
                state.topics.publishers.lock().remove(&topic);
            }
            if let Some(session) = session.upgrade() {
                let _ = session.notify_within(builtin::TOPIC_CLOSE_ID, &encode_name(&topic), Some(NOTIFY_PATIENCE));
            }
        }));
        Ok(publisher)
    }

    /// Subscribes to topic `name` (published by the host or another cell) with `policy`,
    /// through the host: NOT_FOUND while nobody publishes it, PERMISSION_DENIED if the
    /// host's rules for `"topic:NAME"` do not admit this cell, RESOURCE_EXHAUSTED when it
    /// has its most subscribers. Dropping the subscriber unsubscribes.
    pub fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber> {
        let builder = TopicSubscriber::prepare()?;
        let token = self.session.hand_over(&builder.share()?)?;
        let body = Subscribe { name: name.to_string(), policy, token }.encode();
        let reply = self.call(builtin::TOPIC_SUBSCRIBE, &body, &CallOptions::timeout(BROKER_TIMEOUT))?;
        let subscribed = Subscribed::decode(reply.bytes())?;
        let unsubscribe = {
            let (session, topic) = (Arc::downgrade(&self.session), name.to_string());
            let (index, start) = (subscribed.index, subscribed.start);
            move || {
                if let Some(session) = session.upgrade() {
                    let body = Leave { name: topic, index, start }.encode();
                    let _ = session.notify_within(builtin::TOPIC_UNSUBSCRIBE_ID, &body, Some(NOTIFY_PATIENCE));
                }
            }
        };
        let memory = self
            .session
            .take_handed(subscribed.token)
            .and_then(|topic| builder.attached(&topic, subscribed.index as usize, subscribed.start));
        let memory = match memory {
            Ok(memory) => memory,
            Err(e) => {
                unsubscribe();
                return Err(e);
            }
        };
        let subscriber = Subscriber::new(name, memory);
        *subscriber.shared.on_close.lock() = Some(Box::new(unsubscribe));
        let mut subscribers = self.state.topics.subscribers.lock();
        // Subscribers dropped since go (a cell that subscribes again and again keeps a
        // bounded list).
        subscribers.retain(|(_, weak)| weak.strong_count() > 0);
        subscribers.push((name.to_string(), Arc::downgrade(&subscriber.shared)));
        drop(subscribers);
        Ok(subscriber)
    }
}
