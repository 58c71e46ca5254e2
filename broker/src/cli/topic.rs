//! `strata topic create|list|describe|delete`: topic administration, like
//! `kafka-topics.sh`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use strata_client::{Retention, TimestampType, TopicSettings};

use super::{BrokerArgs, human_bytes, print_stdout, table};

/// Topic administration.
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics, one name per line.
    List(ListArgs),
    /// Show a topic's settings and, per partition, owner, offsets and size.
    Describe(DescribeArgs),
    /// Delete a topic and all its records.
    Delete(DeleteArgs),
}

/// `strata topic create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: u32,
    /// Keep records this long (`7d`, `12h`), or `forever`. Default: the
    /// broker's.
    #[arg(long, value_parser = parse_retention, value_name = "DUR")]
    pub retention: Option<Retention>,
    /// Keep at most this many bytes per partition. Default: the broker's.
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Seal a partition's tail into a segment object at this size.
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Whose clock timestamps the records: CreateTime (the producer's, the
    /// default) or LogAppendTime (the broker's at append, so retention
    /// never depends on a client's clock).
    #[arg(long, value_parser = parse_timestamp_type, value_name = "TYPE")]
    pub timestamp_type: Option<TimestampType>,
    /// Succeed if the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

fn parse_timestamp_type(s: &str) -> Result<TimestampType, String> {
    s.parse().map_err(|e: strata_client::Error| e.to_string())
}

fn parse_retention(s: &str) -> Result<Retention, String> {
    match s {
        "forever" | "infinite" | "-1" => Ok(Retention::Forever),
        _ => super::parse_duration(s).map(Retention::Duration),
    }
}

/// `strata topic list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also print each topic's partition count (NAME TAB PARTITIONS).
    #[arg(long, short = 'l')]
    pub long: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata topic describe`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Topic name.
    pub name: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata topic delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Topic name.
    pub name: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Runs the command.
pub async fn run(command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create(a) => create(a).await,
        TopicCommand::List(a) => list(a).await,
        TopicCommand::Describe(a) => describe(a).await,
        TopicCommand::Delete(a) => {
            let admin = a.broker.admin().await?;
            admin
                .delete_topic(&a.name)
                .await
                .with_context(|| format!("cannot delete topic {}", a.name))?;
            eprintln!("deleted topic {}", a.name);
            Ok(())
        }
    }
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let settings = TopicSettings {
        retention: a.retention,
        retention_bytes: a.retention_bytes,
        segment_bytes: a.segment_bytes,
        timestamp_type: a.timestamp_type,
        if_not_exists: a.if_not_exists,
        ..Default::default()
    };
    let t = admin
        .create_topic(&a.name, a.partitions, settings)
        .await
        .with_context(|| format!("cannot create topic {}", a.name))?;
    eprintln!("created topic {} with {} partitions", t.name, t.partitions);
    Ok(())
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let mut out = String::new();
    for t in admin.list_topics().await? {
        if a.long {
            out.push_str(&format!("{}\t{}\n", t.name, t.partitions));
        } else {
            out.push_str(&t.name);
            out.push('\n');
        }
    }
    print_stdout(&out)
}

fn ms_setting(v: Option<i64>) -> String {
    match v {
        None => "default".into(),
        Some(n) if n < 0 => "forever".into(),
        Some(n) => humantime::format_duration(Duration::from_millis(n.unsigned_abs())).to_string(),
    }
}

fn bytes_setting(v: Option<i64>) -> String {
    match v {
        None => "default".into(),
        Some(n) if n < 0 => "unlimited".into(),
        Some(n) => human_bytes(n.unsigned_abs()),
    }
}

async fn describe(a: DescribeArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let t = admin
        .describe_topic(&a.name)
        .await
        .with_context(|| format!("cannot describe topic {}", a.name))?;
    // Owner addresses, best effort.
    let brokers: HashMap<u32, String> = match admin.metadata(&[a.name.as_str()]).await {
        Ok(m) => m
            .brokers
            .into_iter()
            .map(|b| (b.broker_id, b.address))
            .collect(),
        Err(_) => HashMap::new(),
    };
    let c = t.config.unwrap_or_default();
    let mut out = format!(
        "Topic: {}\tTopicId: {}\tPartitions: {}\tRetention: {}\tRetentionBytes: {}\tSegmentBytes: {}\tSegmentAge: {}\tTimestamps: {}\n",
        t.name,
        t.topic_id,
        t.partitions,
        ms_setting(c.retention_ms),
        bytes_setting(c.retention_bytes),
        bytes_setting(c.segment_bytes),
        ms_setting(c.segment_ms),
        c.timestamp_type.as_deref().unwrap_or("CreateTime"),
    );
    let header = [
        "PARTITION",
        "OWNER",
        "EPOCH",
        "LOG-START",
        "HIGH-WATERMARK",
        "SEGMENTS",
        "SEALED",
        "TAIL",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(String::from)];
    for p in &t.partition_details {
        let owner = match p.owner_broker_id {
            None => "-".to_owned(),
            Some(id) => match brokers.get(&id) {
                Some(addr) if !addr.is_empty() => format!("{id} ({addr})"),
                _ => id.to_string(),
            },
        };
        rows.push([
            p.partition.to_string(),
            owner,
            p.leader_epoch.to_string(),
            p.log_start_offset.to_string(),
            p.high_watermark.to_string(),
            p.segments.to_string(),
            human_bytes(p.sealed_bytes),
            human_bytes(p.tail_bytes),
        ]);
    }
    out.push_str(&table(&rows));
    print_stdout(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses() {
        assert_eq!(parse_retention("forever"), Ok(Retention::Forever));
        assert_eq!(
            parse_retention("7d"),
            Ok(Retention::Duration(Duration::from_secs(7 * 86_400)))
        );
        assert!(parse_retention("a week").is_err());
    }

    #[test]
    fn table_aligns() {
        let rows = vec![
            ["A".to_owned(), "BB".to_owned()],
            ["ccc".to_owned(), "d".to_owned()],
        ];
        assert_eq!(table(&rows), "A    BB\nccc  d\n");
    }
}
