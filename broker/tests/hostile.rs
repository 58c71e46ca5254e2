//! Careless or hostile producers (issue #10): a compressed batch whose
//! CRC is right but whose records cannot be read (garbage, records that do
//! not parse, a decompression bomb) is refused with `INVALID_BATCH`, and
//! never reaches the log, so no consumer of the partition ever stops on
//! it. Every codec Kafka clients send is accepted.

mod common;

use bytes::Bytes;
use common::{batch_request, clients, create_topic, fetch_once, loopback_config, now_ms, reason};
use strata_broker::server::start;
use strata_proto::v1::{CreateTopicRequest, ErrorReason};
use strata_storage::batch::{Batch, BatchBuilder, Compression, decode_records_any};

fn request(batch: Bytes) -> strata_proto::v1::ProduceRequest {
    batch_request("h", 0, batch)
}

fn records(values: &[&str]) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for (i, v) in values.iter().enumerate() {
        b.push(1_700_000_000_000 + i as i64, None, Some(v.as_bytes()), &[]);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_compressed_batches_are_refused_and_consumers_carry_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let (mut c, mut admin) = clients(&broker).await;
    create_topic(&mut admin, "h", 1).await;

    // Every codec a Kafka client may send is accepted.
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut want = Vec::new();
    for (i, codec) in codecs.iter().enumerate() {
        let v = format!("good-{i}");
        want.push(v.clone());
        let batch = records(&[&v]).build_compressed(*codec).expect("compress");
        c.produce(request(batch)).await.expect("a good batch");
    }

    let good = records(&["a", "b"]);
    // Right CRC, garbage where the compressed records should be.
    let garbage = good.build_with_compression_bits(Bytes::from_static(b"junk"), Compression::Gzip);
    // Valid zstd, but it holds one record where the header says two.
    let unparsable = good.build_with_compression_bits(one_record_zstd_section(), Compression::Zstd);
    // A decompression bomb: about 80 MiB of records in a few KiB.
    let mut bomb = BatchBuilder::new();
    let zeros = vec![0u8; 1 << 20];
    for i in 0..80 {
        bomb.push(i, None, Some(&zeros), &[]);
    }
    let bomb = bomb.build_compressed(Compression::Zstd).expect("compress");
    assert!(bomb.len() < 64 << 10, "the bomb is small: {}", bomb.len());
    for (what, batch, needle) in [
        ("garbage", garbage, "decompress"),
        ("unparsable records", unparsable, "record"),
        ("bomb", bomb, "more than"),
    ] {
        let err = c.produce(request(batch)).await.expect_err(what);
        assert_eq!(reason(&err), ErrorReason::InvalidBatch, "{what}: {err:?}");
        assert!(err.message().contains(needle), "{what}: {}", err.message());
    }

    let last = records(&["after"])
        .build_compressed(Compression::Zstd)
        .expect("compress");
    let r = c
        .produce(request(last))
        .await
        .expect("after the bad ones")
        .into_inner();
    assert_eq!(
        r.base_offset, 4,
        "nothing of the refused batches is in the log"
    );
    want.push("after".into());

    // A consumer reads everything, every batch decodes.
    let fetched = fetch_once(&mut c, "h", 0).await;
    let got: Vec<String> = fetched
        .batches
        .iter()
        .flat_map(|b| {
            let batch = Batch::from_trusted(b.clone()).expect("stored batch");
            decode_records_any(&batch).expect("every stored batch decodes")
        })
        .map(|r| String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(got, want);
    drop((c, admin));
    broker.shutdown().await.expect("shutdown");
}

/// A valid zstd records section holding one record, to put under a header
/// that declares another count.
fn one_record_zstd_section() -> Bytes {
    let batch = records(&["lonely"])
        .build_compressed(Compression::Zstd)
        .expect("compress");
    batch.slice(strata_storage::batch::RECORD_BATCH_OVERHEAD..)
}

/// Retention compares the broker's clock with record timestamps, so a
/// client's clock must not decide what is kept: a `LogAppendTime` topic
/// stamps records with the broker's time, and a `CreateTime` topic refuses
/// records too far ahead of it (Kafka's `message.timestamp.after.max.ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_follow_the_topic_timestamp_type() {
    use strata_proto::v1::TopicConfig;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(loopback_config(dir.path())).await.expect("start");
    let (mut c, mut admin) = clients(&broker).await;
    for (name, ty) in [("h", "CreateTime"), ("lat", "LogAppendTime")] {
        admin
            .create_topic(CreateTopicRequest {
                name: name.into(),
                partitions: 1,
                config: Some(TopicConfig {
                    timestamp_type: Some(ty.into()),
                    ..TopicConfig::default()
                }),
                ..CreateTopicRequest::default()
            })
            .await
            .expect("create");
    }
    let batch_at = |ts: i64| {
        let mut b = BatchBuilder::new();
        b.push(ts, None, Some(b"v"), &[]);
        b.build_compressed(Compression::Lz4).expect("compress")
    };
    // CreateTime: two hours ahead is refused, saying why; the epoch is old
    // but allowed (no timestamp_before_max by default, as in Kafka).
    let err = c
        .produce(request(batch_at(now_ms() + 2 * 3600 * 1000)))
        .await
        .expect_err("a future timestamp");
    assert_eq!(reason(&err), ErrorReason::InvalidBatch);
    assert!(
        err.message().contains("ahead of the broker's clock"),
        "{}",
        err.message()
    );
    c.produce(request(batch_at(1))).await.expect("an old one");
    // LogAppendTime: whatever the producer says, the broker's time.
    let before = now_ms();
    let mut lat = request(batch_at(1));
    lat.topic = "lat".into();
    c.produce(lat).await.expect("append");
    let fetched = fetch_once(&mut c, "lat", 0).await;
    let batch = Batch::from_trusted(fetched.batches[0].clone()).expect("stored");
    for r in decode_records_any(&batch).expect("decode") {
        assert!(
            r.timestamp >= before && r.timestamp <= now_ms(),
            "log append time {} not in [{before}, now]",
            r.timestamp
        );
    }
    batch
        .verify_crc()
        .expect("the stamped batch keeps a valid CRC");
    drop((c, admin));
    broker.shutdown().await.expect("shutdown");
}
