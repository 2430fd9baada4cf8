//! The host as the broker of publish/subscribe: the topics of a hub by name, who
//! publishes each, and the subscriptions it brokered. The host publishes and subscribes
//! itself through the same memory its cells use (`runtime::topic`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::Hub;
use crate::error::{Error, Result};
use crate::proto::topic::TopicPolicy;
use crate::runtime::sync::Mutex;
use crate::runtime::topic::{subscribe_locally, Publisher, PublisherShared, Subscriber, TopicOptions};
use crate::shm::topic::{TopicPublisher, TOPIC_NAME_MAX};
use crate::wire::Status;

/// Who publishes a topic.
enum Owner {
    /// The host itself.
    Host(Weak<PublisherShared>),
}

/// A hub's topics.
#[derive(Default)]
pub(crate) struct Topics {
    by_name: Mutex<HashMap<String, Owner>>,
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty() && name.len() <= TOPIC_NAME_MAX && !name.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::new(Status::InvalidArgument, format!("topic name {name:?}: 1 to 63 bytes, no control characters")))
    }
}

impl Topics {
    /// The host's publisher of topic `name`, if it still publishes.
    fn local(&self, name: &str) -> Option<Publisher> {
        match self.by_name.lock().get(name) {
            Some(Owner::Host(weak)) => weak.upgrade().map(|shared| Publisher { shared }),
            None => None,
        }
    }
}

impl Hub {
    /// Creates topic `name`, published by the host: ALREADY_EXISTS while another of that
    /// name lives, INVALID_ARGUMENT for options out of range. Dropping the publisher
    /// (every clone) closes the topic.
    pub fn publish(&self, name: &str, options: TopicOptions) -> Result<Publisher> {
        check_name(name)?;
        let topics = &self.shared.topics;
        let mut by_name = topics.by_name.lock();
        let alive = match by_name.get(name) {
            Some(Owner::Host(weak)) => weak.strong_count() > 0,
            None => false,
        };
        if alive {
            return Err(Error::new(Status::AlreadyExists, format!("topic {name:?} is published already")));
        }
        let publisher = Publisher::new(name, TopicPublisher::create(name, options.geometry())?);
        by_name.insert(name.to_string(), Owner::Host(Arc::downgrade(&publisher.shared)));
        let (hub, topic) = (Arc::downgrade(&self.shared), name.to_string());
        let ours = Arc::downgrade(&publisher.shared);
        *publisher.shared.on_close.lock() = Some(Box::new(move || {
            let Some(hub) = hub.upgrade() else { return };
            let mut by_name = hub.topics.by_name.lock();
            // Only this topic's entry: the name may have been published again since.
            if matches!(by_name.get(&topic), Some(Owner::Host(weak)) if weak.ptr_eq(&ours)) {
                by_name.remove(&topic);
            }
        }));
        Ok(publisher)
    }

    /// Subscribes the host to topic `name` with `policy`: NOT_FOUND while nobody
    /// publishes it, RESOURCE_EXHAUSTED when it has its most subscribers.
    pub fn subscribe(&self, name: &str, policy: TopicPolicy) -> Result<Subscriber> {
        check_name(name)?;
        let publisher = self
            .shared
            .topics
            .local(name)
            .ok_or_else(|| Error::new(Status::NotFound, format!("nobody publishes topic {name:?}")))?;
        subscribe_locally(&publisher, policy)
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
        let big = vec![5u8; 1000];
        publisher.publish(&big, Duration::from_secs(1)).unwrap();
        let mut loan = publisher.loan(Duration::from_secs(1)).unwrap();
        loan.bytes_mut()[..3].copy_from_slice(b"abc");
        assert_eq!(loan.publish(3).unwrap(), 3);
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
}
