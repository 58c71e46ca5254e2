//! `strata produce TOPIC`: one record per line of standard input, like
//! `kafka-console-producer.sh`.
//!
//! Lines are sent as they are read (the producer batches them); with
//! `--key-separator`, the text before the first separator is the key. At end
//! of input everything is flushed and the count goes to stderr; if any record
//! failed, the command exits non-zero with the first error.

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use strata_client::{Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::BrokerArgs;

/// Produce one record per line of standard input.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines without
    /// it are sent without a key).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// When a record counts as written: `all` (durable in the bucket) or
    /// `leader` (in the owner's memory; faster, may lose the last
    /// milliseconds on a crash).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: Acks,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// How long a batch waits for more records.
    #[arg(long, default_value = "5ms", value_parser = super::parse_duration)]
    pub linger: std::time::Duration,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

pub(crate) fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse().map_err(|e: strata_client::Error| e.to_string())
}

pub(crate) fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse().map_err(|e: strata_client::Error| e.to_string())
}

/// Splits `line` into (key, value) at the first `sep`.
fn split_line(line: &[u8], sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(sep) = sep.filter(|s| !s.is_empty())
        && let Some(at) = line.windows(sep.len()).position(|w| w == sep)
    {
        return (
            Some(Bytes::copy_from_slice(&line[..at])),
            Bytes::copy_from_slice(&line[at + sep.len()..]),
        );
    }
    (None, Bytes::copy_from_slice(line))
}

/// Waits for acks as they come; returns (acknowledged, failed, first error).
async fn collect(
    mut rx: mpsc::Receiver<DeliveryFuture>,
) -> (u64, u64, Option<strata_client::Error>) {
    let mut pending = FuturesUnordered::new();
    let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
    let mut open = true;
    loop {
        tokio::select! {
            f = rx.recv(), if open => match f {
                Some(f) => pending.push(f),
                None => open = false,
            },
            Some(r) = pending.next(), if !pending.is_empty() => match r {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            },
            else => break,
        }
    }
    (ok, failed, first)
}

/// Runs the command.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        linger: args.linger,
        ..Default::default()
    };
    let producer = Producer::connect(
        args.broker.url(),
        ProducerConfig {
            connection: args.broker.connect_options()?,
            ..config
        },
    )
    .await?;
    // Fail early, before reading input, when the topic does not exist.
    producer
        .partition_count(&args.topic)
        .await
        .with_context(|| format!("cannot produce to topic {}", args.topic))?;
    let (tx, rx) = mpsc::channel(4096);
    let collector = tokio::spawn(collect(rx));
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut sent = 0u64;
    let mut send_error = None;
    loop {
        line.clear();
        let n = stdin
            .read_until(b'\n', &mut line)
            .await
            .context("cannot read standard input")?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let (key, value) = split_line(&line, sep);
        let mut record = ProducerRecord::new(args.topic.clone(), value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        match producer.send(record).await {
            Ok(ack) => {
                sent += 1;
                if tx.send(ack).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                send_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    producer.flush().await?;
    let (ok, failed, first) = collector.await.context("ack collector failed")?;
    eprintln!("{ok} records produced to {}", args.topic);
    if let Some(e) = send_error {
        return Err(anyhow::Error::new(e).context(format!(
            "stopped after {sent} records: cannot send the next one"
        )));
    }
    if let Some(e) = first {
        return Err(anyhow::Error::new(e).context(format!("{failed} of {sent} records failed")));
    }
    producer.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let (k, v) = split_line(b"user1:hello:world", Some(b":"));
        assert_eq!(k.as_deref(), Some(&b"user1"[..]));
        assert_eq!(&v[..], b"hello:world");
        let (k, v) = split_line(b"no separator", Some(b":"));
        assert!(k.is_none());
        assert_eq!(&v[..], b"no separator");
        let (k, v) = split_line(b"a::b", Some(b"::"));
        assert_eq!(k.as_deref(), Some(&b"a"[..]));
        assert_eq!(&v[..], b"b");
        let (k, _) = split_line(b"a:b", None);
        assert!(k.is_none());
    }
}
