//! What a coordinator writes to its partition of `__consumer_offsets`, and
//! its snapshots.
//!
//! Records are JSON key/value pairs in ordinary uncompressed batches:
//!
//! | key                                                     | value          |
//! |---------------------------------------------------------|----------------|
//! | `{"type":"offset","group":g,"topic":t,"partition":p}`   | [`Committed`]  |
//! | `{"type":"group","group":g}`                            | [`GroupValue`] |
//!
//! A null value is a tombstone (the offset, or the whole group with its
//! offsets, was deleted). The latest record of a key wins, so the state is
//! a pure function of the log ([`ShardState::apply`]); a [`Snapshot`] at
//! offset `X` is that function over the records below `X`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_storage::batch::{Batch, BatchBuilder, decode_records};

use super::state::{Committed, Group, GroupValue};

/// A record's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordKey {
    /// A committed offset.
    Offset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A group's membership and assignment.
    Group {
        /// The group.
        group: String,
    },
}

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// An offset commit (`None`: deleted).
    Offset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The value.
        value: Option<Committed>,
    },
    /// A group record (`None`: the group and its offsets were deleted).
    Group {
        /// The group.
        group: String,
        /// The value.
        value: Option<GroupValue>,
    },
}

impl GroupRecord {
    /// The group it belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. } | GroupRecord::Group { group, .. } => group,
        }
    }

    fn key(&self) -> RecordKey {
        match self {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                ..
            } => RecordKey::Offset {
                group: group.clone(),
                topic: topic.clone(),
                partition: *partition,
            },
            GroupRecord::Group { group, .. } => RecordKey::Group {
                group: group.clone(),
            },
        }
    }

    fn value_json(&self) -> serde_json::Result<Option<Vec<u8>>> {
        match self {
            GroupRecord::Offset { value, .. } => value.as_ref().map(serde_json::to_vec).transpose(),
            GroupRecord::Group { value, .. } => value.as_ref().map(serde_json::to_vec).transpose(),
        }
    }
}

/// One batch holding `records`, timestamped `now_ms`.
pub fn encode(records: &[GroupRecord], now_ms: i64) -> serde_json::Result<Bytes> {
    let mut b = BatchBuilder::new();
    for r in records {
        let key = serde_json::to_vec(&r.key())?;
        let value = r.value_json()?;
        b.push(now_ms, Some(&key), value.as_deref(), &[]);
    }
    Ok(b.build())
}

/// The records of a stored batch, with their offsets.
pub fn decode(batch: &Batch) -> Result<Vec<(i64, GroupRecord)>, String> {
    let records = decode_records(batch).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let key: RecordKey = serde_json::from_slice(r.key.as_deref().unwrap_or_default())
            .map_err(|e| format!("record at offset {}: bad key: {e}", r.offset))?;
        let bad_value =
            |e: serde_json::Error| format!("record at offset {}: bad value: {e}", r.offset);
        let record = match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => GroupRecord::Offset {
                group,
                topic,
                partition,
                value: r
                    .value
                    .as_deref()
                    .map(serde_json::from_slice)
                    .transpose()
                    .map_err(bad_value)?,
            },
            RecordKey::Group { group } => GroupRecord::Group {
                group,
                value: r
                    .value
                    .as_deref()
                    .map(serde_json::from_slice)
                    .transpose()
                    .map_err(bad_value)?,
            },
        };
        out.push((r.offset, record));
    }
    Ok(out)
}

/// The durable state of one coordinator partition: what the log's records
/// fold into.
#[derive(Debug, Default)]
pub struct ShardState {
    /// Groups by id.
    pub groups: HashMap<String, Group>,
}

impl ShardState {
    /// Folds one record in while loading (`now_ms` starts the sessions of
    /// restored members).
    pub fn apply(&mut self, record: GroupRecord, now_ms: i64) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => self.apply_offset(group, topic, partition, value),
            GroupRecord::Group { group, value } => match value {
                Some(v) => {
                    let offsets = self
                        .groups
                        .remove(&group)
                        .map(|g| g.offsets)
                        .unwrap_or_default();
                    let mut g = Group::restore(group.clone(), &v, now_ms);
                    g.offsets = offsets;
                    self.groups.insert(group, g);
                }
                None => {
                    self.groups.remove(&group);
                }
            },
        }
    }

    /// Sets (`Some`) or deletes (`None`) one committed offset; a group
    /// left with no members, no offsets and no durable record goes.
    pub fn apply_offset(
        &mut self,
        group: String,
        topic: String,
        partition: u32,
        value: Option<Committed>,
    ) {
        match value {
            Some(v) => {
                self.groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group))
                    .offsets
                    .insert((topic, partition), v);
            }
            None => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                    if g.forgettable() {
                        self.groups.remove(&group);
                    }
                }
            }
        }
    }

    /// The snapshot of this state (durable values only: each group's
    /// persisted record and its offsets).
    pub fn snapshot(&self) -> Snapshot {
        let mut groups = BTreeMap::new();
        for (id, g) in &self.groups {
            let offsets: Vec<SnapshotOffset> = g
                .offsets
                .iter()
                .map(|((topic, partition), c)| SnapshotOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    committed: c.clone(),
                })
                .collect();
            if g.persisted.is_none() && offsets.is_empty() {
                continue;
            }
            groups.insert(
                id.clone(),
                SnapshotGroup {
                    value: g.persisted.clone(),
                    offsets,
                },
            );
        }
        Snapshot {
            format: SNAPSHOT_FORMAT,
            groups,
        }
    }

    /// The state a snapshot holds.
    pub fn from_snapshot(s: Snapshot, now_ms: i64) -> Self {
        let mut state = ShardState::default();
        for (id, g) in s.groups {
            if let Some(v) = g.value {
                state.apply(
                    GroupRecord::Group {
                        group: id.clone(),
                        value: Some(v),
                    },
                    now_ms,
                );
            }
            for o in g.offsets {
                state.apply(
                    GroupRecord::Offset {
                        group: id.clone(),
                        topic: o.topic,
                        partition: o.partition,
                        value: Some(o.committed),
                    },
                    now_ms,
                );
            }
        }
        state
    }
}

/// Version of the snapshot format.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A coordinator partition's state at an offset (stored as JSON through
/// `strata_storage::snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// Groups by id.
    pub groups: BTreeMap<String, SnapshotGroup>,
}

/// One group in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotGroup {
    /// Its durable record, if it ever had members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<GroupValue>,
    /// Its committed offsets.
    #[serde(default)]
    pub offsets: Vec<SnapshotOffset>,
}

/// One committed offset in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub committed: Committed,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Committed {
        Committed {
            offset,
            metadata: String::new(),
            commit_ms: 5,
            topic_id: "00".into(),
        }
    }

    #[test]
    fn records_round_trip_through_a_batch_and_the_latest_wins() {
        let records = vec![
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
                value: Some(committed(10)),
            },
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
                value: Some(committed(20)),
            },
            GroupRecord::Offset {
                group: "h".into(),
                topic: "t".into(),
                partition: 0,
                value: Some(committed(1)),
            },
            GroupRecord::Offset {
                group: "h".into(),
                topic: "t".into(),
                partition: 0,
                value: None,
            },
        ];
        let bytes = encode(&records, 7).unwrap();
        let batch = Batch::from_trusted(bytes).unwrap().stamp(100, 1);
        let decoded = decode(&batch).unwrap();
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded[3].0, 103);
        assert_eq!(
            decoded.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            records
        );
        let mut state = ShardState::default();
        for (_, r) in decoded {
            state.apply(r, 0);
        }
        assert_eq!(state.groups["g"].offsets[&("t".into(), 1)].offset, 20);
        assert!(
            !state.groups.contains_key("h"),
            "a group left with nothing is gone"
        );
        let snap = state.snapshot();
        let json = serde_json::to_vec(&snap).unwrap();
        let back = ShardState::from_snapshot(serde_json::from_slice(&json).unwrap(), 0);
        assert_eq!(back.snapshot(), snap);
    }
}
