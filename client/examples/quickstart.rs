//! Quickstart: create a topic, produce 10 records, consume them back.
//!
//! Run a broker (`strata serve`), then:
//!
//! ```text
//! cargo run -p strata-client --example quickstart [BROKER_URL] [TOPIC]
//! ```
//!
//! The broker URL defaults to `STRATA_BROKER`, else http://127.0.0.1:50051;
//! the topic to `quickstart`. Prints each record read and exits 0 once all
//! 10 came back, in order, exactly once.

use std::time::Duration;

use futures::StreamExt;
use strata_client::{
    Admin, Consumer, ConsumerConfig, Offset, Producer, ProducerConfig, ProducerRecord,
    TopicSettings,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("STRATA_BROKER").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let topic = args.next().unwrap_or_else(|| "quickstart".to_owned());

    // 1. A topic with one partition (kept if it already exists).
    let admin = Admin::connect(&url).await?;
    let settings = TopicSettings {
        if_not_exists: true,
        ..Default::default()
    };
    admin.create_topic(&topic, 1, settings).await?;

    // 2. Ten records; remember where the first one landed.
    let producer = Producer::connect(&url, ProducerConfig::default()).await?;
    let mut acks = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new(topic.clone(), format!("record {i}"))
            .key(format!("key-{i}"))
            .partition(0);
        acks.push(producer.send(record).await?);
    }
    let mut offsets = Vec::new();
    for ack in acks {
        offsets.push(ack.await?.offset);
    }
    producer.close().await?;
    println!("produced 10 records at offsets {offsets:?}");

    // 3. Read them back from the first offset.
    let mut consumer = Consumer::connect(&url, ConsumerConfig::default()).await?;
    consumer.assign(&topic, 0, Offset::At(offsets[0])).await?;
    for (i, &want) in offsets.iter().enumerate() {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .map_err(|_| "timed out waiting for records")?
            .ok_or("the consumer stream ended")??;
        let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
        println!("{}: {value}", record.offset);
        if record.offset != want || value != format!("record {i}") {
            return Err(format!("unexpected record at {}: {value}", record.offset).into());
        }
    }
    println!("consumed all 10 records");
    Ok(())
}
