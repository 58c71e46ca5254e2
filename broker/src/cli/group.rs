//! `strata group list|describe|reset-offsets|delete`: consumer groups, like
//! `kafka-consumer-groups.sh`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use strata_client::proto::v1::GroupDescription;
use strata_client::{Consumer, ConsumerConfig, Offset};

use super::{BrokerArgs, print_stdout, table};

/// Consumer groups.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List the groups of the cluster.
    List(ListArgs),
    /// Show a group's state and, per partition, its committed offset, the
    /// log end, the lag and the member reading it.
    Describe(DescribeArgs),
    /// Set the committed offsets of a group that has no members.
    ResetOffsets(ResetArgs),
    /// Delete a group that has no members, with its committed offsets.
    Delete(DeleteArgs),
}

/// `strata group list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also print each group's state, members and coordinator.
    #[arg(long, short = 'l')]
    pub long: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata group describe`.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The group.
    pub group: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata group reset-offsets`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])))]
pub struct ResetArgs {
    /// The group (it must have no members: stop its consumers first).
    pub group: String,
    /// The topic whose offsets to set (every partition).
    #[arg(long)]
    pub topic: String,
    /// The first record still in the log.
    #[arg(long)]
    pub to_earliest: bool,
    /// The end of the log (skip everything not read yet).
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (clamped to the log).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<i64>,
    /// The first record at or after this time (RFC 3339, e.g.
    /// 2024-05-01T12:00:00Z, or a duration ago, e.g. 10m).
    #[arg(long, value_name = "TIME")]
    pub to_datetime: Option<String>,
    /// Move the committed offsets by N (negative: back), clamped to the log.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Print the new offsets without setting them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `strata group delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The group (it must have no members).
    pub group: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Runs a `group` subcommand.
pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List(a) => list(a).await,
        GroupCommand::Describe(a) => describe(a).await,
        GroupCommand::ResetOffsets(a) => reset(a).await,
        GroupCommand::Delete(a) => {
            let admin = a.broker.admin().await?;
            admin
                .delete_group(&a.group)
                .await
                .with_context(|| format!("cannot delete group {}", a.group))?;
            eprintln!("deleted group {}", a.group);
            Ok(())
        }
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let groups = admin.list_groups().await.context("cannot list groups")?;
    if !a.long {
        let names: String = groups.iter().map(|g| format!("{}\n", g.group_id)).collect();
        return print_stdout(&names);
    }
    let mut rows = vec![[
        "GROUP".to_owned(),
        "STATE".to_owned(),
        "MEMBERS".to_owned(),
        "COORDINATOR".to_owned(),
    ]];
    for g in groups {
        rows.push([
            g.group_id,
            g.state,
            g.members.to_string(),
            g.coordinator_id.to_string(),
        ]);
    }
    print_stdout(&table(&rows))
}

/// One row of `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    topic: String,
    partition: u32,
    current: Option<i64>,
    end: Option<i64>,
    member: Option<(String, String, String)>,
}

/// The rows of a description: every partition with a committed offset or
/// a member, with log ends from `ends` ((topic, partition) → high
/// watermark).
fn rows(d: &GroupDescription, ends: &HashMap<(String, u32), i64>) -> Vec<Row> {
    let mut by_tp: BTreeMap<(String, u32), Row> = BTreeMap::new();
    for o in &d.offsets {
        let key = (o.topic.clone(), o.partition);
        by_tp.insert(
            key.clone(),
            Row {
                topic: o.topic.clone(),
                partition: o.partition,
                current: Some(o.offset),
                end: ends.get(&key).copied(),
                member: None,
            },
        );
    }
    for m in &d.members {
        for tps in &m.assignment {
            for p in &tps.partitions {
                let key = (tps.topic.clone(), *p);
                let row = by_tp.entry(key.clone()).or_insert_with(|| Row {
                    topic: tps.topic.clone(),
                    partition: *p,
                    current: None,
                    end: ends.get(&key).copied(),
                    member: None,
                });
                row.member = Some((m.member_id.clone(), m.client_id.clone(), m.host.clone()));
            }
        }
    }
    by_tp.into_values().collect()
}

fn render(d: &GroupDescription, rows: &[Row]) -> String {
    let dash = || "-".to_owned();
    let assignor = match d.assignor.as_str() {
        "" => String::new(),
        a => format!(", assignor {a}"),
    };
    let mut out = format!(
        "Group {} is {} (epoch {}, {} member{}{assignor}, coordinator broker {})\n\n",
        d.group_id,
        d.state,
        d.group_epoch,
        d.members.len(),
        if d.members.len() == 1 { "" } else { "s" },
        d.coordinator_id
    );
    for m in &d.members {
        if let Some(p) = &m.topic_pattern {
            out.push_str(&format!(
                "Member {} ({}) subscribes to the topics matching {p}\n",
                m.member_id, m.client_id
            ));
        }
    }
    if d.members.iter().any(|m| m.topic_pattern.is_some()) {
        out.push('\n');
    }
    let mut table_rows = vec![[
        "TOPIC".to_owned(),
        "PARTITION".to_owned(),
        "CURRENT-OFFSET".to_owned(),
        "LOG-END-OFFSET".to_owned(),
        "LAG".to_owned(),
        "MEMBER".to_owned(),
        "CLIENT".to_owned(),
        "HOST".to_owned(),
    ]];
    for r in rows {
        let lag = match (r.current, r.end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => dash(),
        };
        let (member, client, host) = r.member.clone().unwrap_or_else(|| (dash(), dash(), dash()));
        table_rows.push([
            r.topic.clone(),
            r.partition.to_string(),
            r.current.map_or_else(dash, |c| c.to_string()),
            r.end.map_or_else(dash, |e| e.to_string()),
            lag,
            member,
            client,
            host,
        ]);
    }
    // Members without partitions, as Kafka lists them.
    let busy: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.member.as_ref().map(|m| m.0.as_str()))
        .collect();
    for m in &d.members {
        if !busy.contains(m.member_id.as_str()) {
            table_rows.push([
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                m.member_id.clone(),
                m.client_id.clone(),
                m.host.clone(),
            ]);
        }
    }
    out.push_str(&table(&table_rows));
    out
}

async fn describe(a: DescribeArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let d = admin
        .describe_group(&a.group)
        .await
        .with_context(|| format!("cannot describe group {}", a.group))?;
    let mut topics: BTreeSet<String> = d.offsets.iter().map(|o| o.topic.clone()).collect();
    topics.extend(d.members.iter().flat_map(|m| m.topics.iter().cloned()));
    // What members subscribed by pattern hold.
    topics.extend(
        d.members
            .iter()
            .flat_map(|m| m.assignment.iter().map(|t| t.topic.clone())),
    );
    let mut ends = HashMap::new();
    for t in topics {
        // A topic deleted since: its rows show no log end.
        if let Ok(desc) = admin.describe_topic(&t).await {
            for p in desc.partition_details {
                ends.insert((t.clone(), p.partition), p.high_watermark);
            }
        }
    }
    print_stdout(&render(&d, &rows(&d, &ends)))
}

async fn reset(a: ResetArgs) -> anyhow::Result<()> {
    let admin = a.broker.admin().await?;
    let d = admin
        .describe_group(&a.group)
        .await
        .or_else(|e| match e.reason() {
            // A group nobody joined yet: offsets can be set all the same.
            Some(strata_client::ErrorReason::GroupIdNotFound) => Ok(GroupDescription {
                group_id: a.group.clone(),
                ..GroupDescription::default()
            }),
            _ => Err(e),
        })
        .with_context(|| format!("cannot read group {}", a.group))?;
    if !d.members.is_empty() {
        anyhow::bail!(
            "group {} has {} active member(s); stop its consumers, then reset its offsets",
            a.group,
            d.members.len()
        );
    }
    let consumer = Consumer::connect(
        a.broker.url(),
        ConsumerConfig {
            connection: a.broker.connect_options()?,
            ..ConsumerConfig::default()
        },
    )
    .await?;
    let partitions = consumer
        .partition_count(&a.topic)
        .await
        .with_context(|| format!("cannot read topic {}", a.topic))?;
    let current: HashMap<u32, i64> = d
        .offsets
        .iter()
        .filter(|o| o.topic == a.topic)
        .map(|o| (o.partition, o.offset))
        .collect();
    let datetime = a
        .to_datetime
        .as_deref()
        .map(super::consume::parse_time)
        .transpose()?;
    let mut new = Vec::new();
    let mut rows = vec![[
        "TOPIC".to_owned(),
        "PARTITION".to_owned(),
        "OLD-OFFSET".to_owned(),
        "NEW-OFFSET".to_owned(),
    ]];
    for p in 0..partitions {
        let (start, end) = consumer.watermarks(&a.topic, p).await?;
        let clamp = |o: i64| o.clamp(start, end);
        let target = if a.to_earliest {
            start
        } else if a.to_latest {
            end
        } else if let Some(o) = a.to_offset {
            clamp(o)
        } else if let Some(ts) = datetime {
            consumer.resolve(&a.topic, p, Offset::Timestamp(ts)).await?
        } else if let Some(n) = a.shift_by {
            clamp(current.get(&p).copied().unwrap_or(start).saturating_add(n))
        } else {
            anyhow::bail!(
                "say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by"
            );
        };
        rows.push([
            a.topic.clone(),
            p.to_string(),
            current
                .get(&p)
                .map_or_else(|| "-".to_owned(), |o| o.to_string()),
            target.to_string(),
        ]);
        new.push((a.topic.clone(), p, target));
    }
    print_stdout(&table(&rows))?;
    if a.dry_run {
        eprintln!("dry run: nothing changed (run without --dry-run to set these offsets)");
        return Ok(());
    }
    admin
        .alter_group_offsets(&a.group, &new)
        .await
        .with_context(|| format!("cannot set the offsets of group {}", a.group))?;
    eprintln!("group {}: {} offsets set", a.group, new.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use strata_client::proto::v1::{CommittedOffset, GroupMember, TopicPartitions};

    use super::*;

    #[test]
    fn describe_joins_offsets_members_and_log_ends() {
        let d = GroupDescription {
            group_id: "billing".into(),
            state: "STABLE".into(),
            group_epoch: 3,
            coordinator_id: 1,
            assignor: "uniform".into(),
            members: vec![
                GroupMember {
                    member_id: "m1".into(),
                    client_id: "strata-cli".into(),
                    host: "127.0.0.1".into(),
                    assignment: vec![TopicPartitions {
                        topic: "orders".into(),
                        partitions: vec![0, 1],
                    }],
                    ..GroupMember::default()
                },
                GroupMember {
                    member_id: "idle".into(),
                    ..GroupMember::default()
                },
            ],
            offsets: vec![CommittedOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 7,
                ..CommittedOffset::default()
            }],
        };
        let ends = [
            (("orders".to_owned(), 0), 10),
            (("orders".to_owned(), 1), 4),
        ]
        .into_iter()
        .collect();
        let r = rows(&d, &ends);
        assert_eq!(r.len(), 2);
        let text = render(&d, &r);
        assert!(
            text.starts_with("Group billing is STABLE (epoch 3, 2 members"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("TOPIC"), "{text}");
        assert!(
            lines[3].split_whitespace().eq([
                "orders",
                "0",
                "7",
                "10",
                "3",
                "m1",
                "strata-cli",
                "127.0.0.1"
            ]),
            "{text}"
        );
        assert!(
            lines[4].split_whitespace().eq([
                "orders",
                "1",
                "-",
                "4",
                "-",
                "m1",
                "strata-cli",
                "127.0.0.1"
            ]),
            "{text}"
        );
        assert!(lines[5].contains("idle"), "{text}");
    }
}
