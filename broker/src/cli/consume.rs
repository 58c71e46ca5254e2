//! `strata consume TOPIC`: print records, one value per line, like
//! `kafka-console-consumer.sh`.
//!
//! Starts at the end of each partition (new records only) unless
//! `--from-beginning` or `--offset N`; reads every partition unless
//! `--partition P`. With `--group G` it consumes as a group member: the
//! group's coordinator shares the partitions among its members, reading
//! starts at the committed offsets, and positions are committed as it goes
//! and once more, with a clean leave, on exit; `--include REGEX` instead of
//! a topic subscribes the group member to every topic whose name matches,
//! including topics created later (Kafka's `--include`). Stops after `-n COUNT`
//! records, after `--timeout` without a record, on Ctrl-C, or when stdout is
//! closed (`| head`); all are clean exits.

use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use strata_client::{Consumer, ConsumerConfig, ConsumerRecord, Offset, OffsetReset};
use tokio::io::AsyncWriteExt;

use super::{BrokerArgs, is_broken_pipe};

/// Print records of a topic, one value per line.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(required_unless_present = "include")]
    pub topic: Option<String>,
    /// Read every topic whose whole name matches this regular expression
    /// (RE2 syntax, e.g. 'orders-.*'), and topics created later that
    /// match, as a member of --group.
    #[arg(
        long,
        value_name = "REGEX",
        requires = "group",
        conflicts_with_all = ["topic", "partition"]
    )]
    pub include: Option<String>,
    /// Start at the earliest record still in the log (default: only new
    /// records).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, value_name = "N")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (RFC 3339, e.g.
    /// 2024-05-01T12:00:00Z, or a duration ago, e.g. 10m).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["offset", "from_beginning"])]
    pub from_time: Option<String>,
    /// Read only this partition (default: all).
    #[arg(long, value_name = "P", conflicts_with = "group")]
    pub partition: Option<u32>,
    /// Consume as a member of this group: partitions are shared with the
    /// group's other members, reading starts at the group's committed
    /// offsets (else at the end, or at the beginning with
    /// --from-beginning), positions are committed as records are printed
    /// and on exit, and the group is left cleanly.
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["offset", "from_time"])]
    pub group: Option<String>,
    /// Exit after this many records.
    #[arg(short = 'n', long = "max-messages", value_name = "COUNT")]
    pub max_messages: Option<u64>,
    /// Exit (successfully) after this long without a record.
    #[arg(long, value_name = "DUR", value_parser = super::parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the key before the value, separated by a tab.
    #[arg(long)]
    pub print_key: bool,
    /// Print the offset first.
    #[arg(long)]
    pub print_offset: bool,
    /// Kafka-style formatter properties: print.key, print.offset,
    /// print.partition, print.timestamp, print.headers (=true), key.separator.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Kafka-style consumer settings for --group: session.timeout.ms,
    /// group.instance.id, group.remote.assignor (uniform or range),
    /// enable.auto.commit, auto.commit.interval.ms, client.id.
    #[arg(
        long = "consumer-property",
        value_name = "KEY=VALUE",
        requires = "group"
    )]
    pub consumer_properties: Vec<String>,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

impl ConsumeArgs {
    /// The topic (clap requires one unless --include).
    fn topic(&self) -> &str {
        self.topic.as_deref().unwrap_or_default()
    }

    /// What is read, for error messages.
    fn source(&self) -> String {
        match &self.include {
            Some(pattern) => format!("the topics matching {pattern}"),
            None => format!("topic {}", self.topic()),
        }
    }
}

/// How records are printed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Format {
    key: bool,
    offset: bool,
    partition: bool,
    timestamp: bool,
    headers: bool,
    separator: String,
}

impl Format {
    fn from_args(a: &ConsumeArgs) -> anyhow::Result<Format> {
        let mut f = Format {
            key: a.print_key,
            offset: a.print_offset,
            partition: false,
            timestamp: false,
            headers: false,
            separator: "\t".into(),
        };
        for p in &a.properties {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--property takes KEY=VALUE: {p}"))?;
            let on = v.eq_ignore_ascii_case("true");
            match k {
                "print.key" => f.key = on,
                "print.offset" => f.offset = on,
                "print.partition" => f.partition = on,
                "print.timestamp" => f.timestamp = on,
                "print.headers" => f.headers = on,
                "key.separator" => f.separator = v.to_owned(),
                _ => anyhow::bail!(
                    "unknown --property; use print.key, print.offset, print.partition, print.timestamp, print.headers or key.separator: {k}"
                ),
            }
        }
        Ok(f)
    }

    fn write(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        let sep = self.separator.as_bytes();
        if self.timestamp {
            out.extend_from_slice(format!("CreateTime:{}", r.timestamp_ms).as_bytes());
            out.extend_from_slice(sep);
        }
        if self.partition {
            out.extend_from_slice(format!("Partition:{}", r.partition).as_bytes());
            out.extend_from_slice(sep);
        }
        if self.offset {
            out.extend_from_slice(format!("Offset:{}", r.offset).as_bytes());
            out.extend_from_slice(sep);
        }
        if self.headers {
            let hs: Vec<String> = r
                .headers
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}:{}", String::from_utf8_lossy(v)),
                    None => format!("{k}:null"),
                })
                .collect();
            if hs.is_empty() {
                out.extend_from_slice(b"NO_HEADERS");
            } else {
                out.extend_from_slice(hs.join(",").as_bytes());
            }
            out.extend_from_slice(sep);
        }
        if self.key {
            out.extend_from_slice(r.key.as_deref().unwrap_or(b"null"));
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(r.value.as_deref().unwrap_or(b"null"));
        out.push(b'\n');
    }
}

/// Applies `--consumer-property KEY=VALUE`s (Kafka's names).
fn apply_consumer_properties(c: &mut ConsumerConfig, props: &[String]) -> anyhow::Result<()> {
    for p in props {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--consumer-property takes KEY=VALUE: {p}"))?;
        let ms = || -> anyhow::Result<Duration> {
            let n: u64 = v
                .parse()
                .with_context(|| format!("{k} takes milliseconds: {v}"))?;
            Ok(Duration::from_millis(n))
        };
        match k {
            "session.timeout.ms" => c.session_timeout = ms()?,
            "auto.commit.interval.ms" => c.auto_commit_interval = ms()?,
            "enable.auto.commit" => {
                c.auto_commit = v
                    .parse()
                    .with_context(|| format!("{k} takes true or false: {v}"))?;
            }
            "group.instance.id" => c.instance_id = Some(v.to_owned()),
            "group.remote.assignor" => c.server_assignor = Some(v.to_owned()),
            "client.id" => c.client_id = v.to_owned(),
            _ => anyhow::bail!(
                "unknown --consumer-property; use session.timeout.ms, group.instance.id, \
                 group.remote.assignor, enable.auto.commit, auto.commit.interval.ms or \
                 client.id: {k}"
            ),
        }
    }
    Ok(())
}

/// A time as RFC 3339 or a duration ago, in ms since the epoch.
pub(crate) fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        return Ok(i64::try_from(ms).unwrap_or(i64::MAX));
    }
    let ago = humantime::parse_duration(s).with_context(|| {
        format!("--from-time takes an RFC 3339 time or a duration ago (10m): {s}")
    })?;
    let t = std::time::SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(std::time::UNIX_EPOCH);
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Runs the command.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let format = Format::from_args(&args)?;
    let start = match (&args.from_time, args.offset, args.from_beginning) {
        (Some(t), _, _) => Offset::Timestamp(parse_time(t)?),
        (None, Some(o), _) => Offset::At(o),
        (None, None, true) => Offset::Earliest,
        (None, None, false) => Offset::Latest,
    };
    let mut config = ConsumerConfig {
        client_id: "strata-cli".into(),
        ..ConsumerConfig::default()
    };
    if args.group.is_some() {
        config.auto_offset_reset = if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        };
        apply_consumer_properties(&mut config, &args.consumer_properties)?;
    }
    config.connection = args.broker.connect_options()?;
    let mut consumer = Consumer::connect(args.broker.url(), config).await?;
    if let Some(group) = &args.group {
        match &args.include {
            Some(pattern) => consumer.subscribe_pattern(pattern, group).await,
            None => consumer.subscribe(&[args.topic()], group).await,
        }
        .with_context(|| format!("cannot join group {group} on {}", args.source()))?;
        let result = print_records(&args, &format, &mut consumer).await;
        // The last commit and a clean leave, whatever ended the loop.
        let closed = consumer.close().await;
        let count = result?;
        closed.with_context(|| format!("cannot commit the final offsets of group {group}"))?;
        eprintln!("processed {count} records");
        return Ok(());
    }
    let topic = args.topic();
    match args.partition {
        Some(p) => consumer
            .assign(topic, p, start)
            .await
            .with_context(|| format!("cannot read {topic}/{p}"))?,
        None => {
            consumer
                .assign_topic(topic, start)
                .await
                .with_context(|| format!("cannot read topic {topic}"))?;
        }
    }
    let count = print_records(&args, &format, &mut consumer).await?;
    eprintln!("processed {count} records");
    Ok(())
}

/// Prints records until `-n`, `--timeout`, Ctrl-C or a closed stdout;
/// returns how many were printed.
async fn print_records(
    args: &ConsumeArgs,
    format: &Format,
    consumer: &mut Consumer,
) -> anyhow::Result<u64> {
    if args.max_messages == Some(0) {
        return Ok(0);
    }
    let mut stdout = tokio::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut count = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let result: anyhow::Result<()> = async {
        loop {
            // Flush what we have before waiting, so output is never stuck in
            // the buffer while the topic is idle.
            let next = match consumer.recv().now_or_never() {
                Some(r) => r,
                None => {
                    if !buf.is_empty() {
                        stdout.write_all(&buf).await?;
                        stdout.flush().await?;
                        buf.clear();
                    }
                    let wait = async {
                        match args.timeout {
                            Some(t) => tokio::time::timeout(t, consumer.recv()).await.ok(),
                            None => Some(consumer.recv().await),
                        }
                    };
                    tokio::select! {
                        r = wait => match r {
                            Some(r) => r,
                            None => return Ok(()), // --timeout without a record
                        },
                        _ = &mut ctrl_c => return Ok(()),
                    }
                }
            };
            let Some(record) = next else {
                return Ok(());
            };
            let record = record.with_context(|| format!("cannot read {}", args.source()))?;
            format.write(&record, &mut buf);
            count += 1;
            if args.group.is_some() {
                // The next recv may commit this record's position: it must
                // be out of our hands by then (a crash must not lose a
                // committed record that was never printed).
                stdout.write_all(&buf).await?;
                stdout.flush().await?;
                buf.clear();
            } else if buf.len() >= 64 * 1024 {
                stdout.write_all(&buf).await?;
                buf.clear();
            }
            if args.max_messages.is_some_and(|n| count >= n) {
                return Ok(());
            }
        }
    }
    .await;
    let flushed = async {
        stdout.write_all(&buf).await?;
        stdout.flush().await
    }
    .await;
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(is_broken_pipe) => {}
        Err(e) => return Err(e),
        Ok(()) => match flushed {
            Err(e) if is_broken_pipe(&e) => {}
            other => other?,
        },
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 1,
            offset: 42,
            timestamp_ms: 7,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
        }
    }

    fn fmt(f: &Format) -> String {
        let mut out = Vec::new();
        f.write(&record(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn formats_like_kafka() {
        let mut f = Format {
            key: false,
            offset: false,
            partition: false,
            timestamp: false,
            headers: false,
            separator: "\t".into(),
        };
        assert_eq!(fmt(&f), "v\n");
        f.key = true;
        assert_eq!(fmt(&f), "k\tv\n");
        f.offset = true;
        f.partition = true;
        assert_eq!(fmt(&f), "Partition:1\tOffset:42\tk\tv\n");
    }
}
