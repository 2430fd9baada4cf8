//! Topics of protobuf messages: a [`TypedPublisher`] encodes each message in place into a
//! loaned slot, a [`TypedSubscriber`] decodes each sample into a message. Any prost
//! message type is a topic's type (what `cellshm-codegen` generates, or prost's own);
//! nothing ties a topic to one type but the code on both sides, as with a gRPC method.

use std::marker::PhantomData;
use std::time::Duration;

use prost::Message;

use super::{decode, encode_into};
use crate::error::{Error, Result};
use crate::runtime::topic::{Publisher, Sample, Subscriber, TopicOptions, Topics};
use crate::wire::Status;
use crate::TopicPolicy;

/// Publishes messages of type `M` on a topic. Cheap to clone, as [`Publisher`].
pub struct TypedPublisher<M> {
    publisher: Publisher,
    _message: PhantomData<fn(&M)>,
}

impl<M> Clone for TypedPublisher<M> {
    fn clone(&self) -> Self {
        TypedPublisher { publisher: self.publisher.clone(), _message: PhantomData }
    }
}

impl<M> std::fmt::Debug for TypedPublisher<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedPublisher").field("topic", &self.publisher.name()).finish()
    }
}

impl<M: Message> TypedPublisher<M> {
    /// Creates topic `name` on the hub, a supervisor or a cell (see [`Topics::publish`]);
    /// `options.sample_size` bounds a message's encoded length.
    pub fn create(owner: &impl Topics, name: &str, options: TopicOptions) -> Result<TypedPublisher<M>> {
        Ok(TypedPublisher::new(owner.publish(name, options)?))
    }

    /// Publishes `M`s on a topic published already.
    pub fn new(publisher: Publisher) -> TypedPublisher<M> {
        TypedPublisher { publisher, _message: PhantomData }
    }

    /// Encodes `message` straight into a loaned slot and publishes it; its sequence
    /// number. INVALID_ARGUMENT when its encoding is longer than the topic's sample
    /// size; waits as [`Publisher::loan`] does.
    pub fn publish(&self, message: &M, timeout: Duration) -> Result<u64> {
        let len = message.encoded_len();
        let size = self.publisher.sample_size();
        if len > size {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "topic {:?}: a {} of {len} bytes encoded, its limit is {size}",
                    self.publisher.name(),
                    std::any::type_name::<M>()
                ),
            ));
        }
        let mut loan = self.publisher.loan(timeout)?;
        let written = encode_into(message, loan.bytes_mut());
        loan.publish(written)
    }

    /// The untyped publisher underneath.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}

/// One message received on a typed topic, decoded (a copy: the slot is let go of at
/// once).
#[derive(Clone, Debug, PartialEq)]
pub struct TypedSample<M> {
    /// The sample's sequence number.
    pub seq: u64,
    /// Samples this subscriber missed just before it.
    pub missed: u64,
    /// The message.
    pub message: M,
}

/// Receives messages of type `M` from a topic.
pub struct TypedSubscriber<M> {
    subscriber: Subscriber,
    _message: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for TypedSubscriber<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedSubscriber").field("topic", &self.subscriber.name()).finish()
    }
}

impl<M: Message + Default> TypedSubscriber<M> {
    /// Subscribes to topic `name` (see [`Topics::subscribe`]).
    pub fn subscribe(owner: &impl Topics, name: &str, policy: TopicPolicy) -> Result<TypedSubscriber<M>> {
        Ok(TypedSubscriber::new(owner.subscribe(name, policy)?))
    }

    /// Reads `M`s from a subscription made already.
    pub fn new(subscriber: Subscriber) -> TypedSubscriber<M> {
        TypedSubscriber { subscriber, _message: PhantomData }
    }

    /// The next message, as [`Subscriber::recv`]; a sample that does not decode as an
    /// `M` is INTERNAL for this call (the subscription goes on with the next).
    pub fn recv(&self, timeout: Duration) -> Result<Option<TypedSample<M>>> {
        self.subscriber.recv(timeout)?.map(|s| self.decoded(s)).transpose()
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Option<TypedSample<M>>> {
        self.subscriber.try_recv()?.map(|s| self.decoded(s)).transpose()
    }

    /// The newest message queued, as [`Subscriber::latest`] (last-value topics).
    pub fn latest(&self) -> Result<Option<TypedSample<M>>> {
        self.subscriber.latest()?.map(|s| self.decoded(s)).transpose()
    }

    /// The next message, awaited, as [`Subscriber::recv_async`].
    pub async fn recv_async(&self) -> Result<TypedSample<M>> {
        let sample = self.subscriber.recv_async().await?;
        self.decoded(sample)
    }

    /// The untyped subscriber underneath.
    pub fn subscriber(&self) -> &Subscriber {
        &self.subscriber
    }

    fn decoded(&self, sample: Sample) -> Result<TypedSample<M>> {
        let message = decode(&sample.to_vec(), &format!("topic {:?}", self.subscriber.name()))?;
        Ok(TypedSample { seq: sample.seq(), missed: sample.missed(), message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::HubConfig;
    use crate::Hub;

    /// A message with a string and a number, by hand (no build script in this crate).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Reading {
        #[prost(string, tag = "1")]
        sensor: String,
        #[prost(uint64, tag = "2")]
        value: u64,
    }

    #[test]
    fn messages_are_encoded_in_place_and_decoded_in_order_and_garbage_is_internal() {
        let hub = Hub::create(HubConfig::default()).unwrap();
        let options = TopicOptions { sample_size: 64, ..TopicOptions::default() };
        let publisher = TypedPublisher::<Reading>::create(&hub, "readings", options).unwrap();
        let subscriber = TypedSubscriber::<Reading>::subscribe(&hub, "readings", TopicPolicy::Block).unwrap();
        for value in 1..=3 {
            let reading = Reading { sensor: "t1".into(), value };
            assert_eq!(publisher.publish(&reading, Duration::from_secs(1)).unwrap(), value);
        }
        for value in 1..=3 {
            let sample = subscriber.recv(Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!(sample, TypedSample { seq: value, missed: 0, message: Reading { sensor: "t1".into(), value } });
        }
        let long = Reading { sensor: "x".repeat(100), value: 0 };
        let e = publisher.publish(&long, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        // A sample that is no Reading fails that read alone.
        publisher.publisher().publish(&[0xff, 0xff, 0xff], Duration::from_secs(1)).unwrap();
        publisher.publish(&Reading { sensor: "t2".into(), value: 9 }, Duration::from_secs(1)).unwrap();
        assert_eq!(subscriber.recv(Duration::from_secs(1)).unwrap_err().status(), Status::Internal);
        assert_eq!(subscriber.recv(Duration::from_secs(1)).unwrap().unwrap().message.value, 9);
        assert!(subscriber.try_recv().unwrap().is_none());
    }
}
