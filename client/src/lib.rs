//! Rust client for Strata, a Kafka-style log service whose only source of
//! truth is an S3-compatible bucket.
//!
//! - [`Producer`]: batching (linger and size), zstd / lz4 compression,
//!   Kafka's key partitioner ([`partition_for_key`]) and the sticky one for
//!   keyless records, retries, and idempotence by default: a retry after a
//!   lost ack never writes a record twice.
//! - [`Consumer`]: assign partitions, seek to earliest / latest / an offset /
//!   a timestamp, and read an async [`futures::Stream`] of
//!   [`ConsumerRecord`]s, in order per partition, with bounded buffering.
//! - [`Admin`]: create, list, describe and delete topics; cluster metadata
//!   and status; drain a broker, move a partition.
//!
//! Every `connect` takes one broker URL or several separated by commas: the
//! client needs any one of them to answer, learns the other brokers from
//! it, and keeps working when the broker it started from goes away.
//! `https://` URLs use TLS: [`ConnectOptions`] (in [`ProducerConfig`],
//! [`ConsumerConfig`], [`Admin::connect_with`]) says which CA to trust and
//! which client certificate to present.
//!
//! Every failure is an [`Error`] that says what to do, and
//! [`Error::is_retryable`] says whether trying again can help.
//!
//! ```no_run
//! # async fn demo() -> strata_client::Result<()> {
//! use futures::StreamExt;
//! use strata_client::*;
//!
//! let url = "http://127.0.0.1:50051";
//! let admin = Admin::connect(url).await?;
//! admin
//!     .create_topic("greetings", 3, TopicSettings { if_not_exists: true, ..Default::default() })
//!     .await?;
//!
//! let producer = Producer::connect(url, ProducerConfig::default()).await?;
//! let ack = producer
//!     .send_and_wait(ProducerRecord::new("greetings", "hello").key("en"))
//!     .await?;
//!
//! let mut consumer = Consumer::connect(url, ConsumerConfig::default()).await?;
//! consumer.assign("greetings", ack.partition, Offset::At(ack.offset)).await?;
//! let record = consumer.next().await.expect("the stream never ends")?;
//! assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```
//!
//! The one thing a newcomer must not break: every acknowledged record is
//! read back exactly once. The producer keeps a batch's sequence numbers
//! across retries; the consumer resumes at the first offset it has not
//! handed out.

mod admin;
mod cluster;
mod connect;
mod consumer;
mod error;
mod group;
mod partitioner;
mod producer;

pub use admin::{Admin, Retention, TimestampType, TopicSettings};
pub use connect::{AuthChannel, Authorize, ConnectOptions, Credentials, TlsOptions};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset, RebalanceListener,
};
pub use error::{Error, Result};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{
    Acks, Compression, DeliveryFuture, MAX_IN_FLIGHT_IDEMPOTENT, Producer, ProducerConfig,
    ProducerRecord, RecordMetadata,
};

/// The generated protocol types, for callers that want the raw messages
/// ([`proto::v1::TopicDescription`], ...).
pub use strata_proto as proto;
/// The broker's reason in [`Error::Broker`].
pub use strata_proto::ErrorInfo;
pub use strata_proto::v1::ErrorReason;

/// The README's client example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
