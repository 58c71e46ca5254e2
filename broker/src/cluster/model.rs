//! The cluster's documents in the bucket and the balancer.
//!
//! - [`Heartbeat`]: `cluster/brokers/{id}/heartbeat.json`, overwritten by
//!   its broker every `cluster.heartbeat_interval`.
//! - [`ControllerTerm`]: `cluster/controller/{term}.json`, create-only: the
//!   broker that created the highest term is the controller while its
//!   heartbeat is alive and it is not draining.
//! - [`Assignment`]: `cluster/assignment/{version}.json`, create-only:
//!   partition → broker. Brokers follow the highest version.
//! - [`plan`]: the pure function the controller runs to compute the next
//!   assignment (unit-tested below).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Load figures a broker reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Load {
    /// Produce bytes accepted per second.
    pub bytes_in_per_sec: f64,
    /// Fetch bytes served per second.
    pub bytes_out_per_sec: f64,
    /// CPU cores used by the process.
    pub cpu_cores: f64,
}

/// A partition a broker serves, with its produce rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Produce bytes per second into it.
    #[serde(default)]
    pub bytes_in_per_sec: f64,
}

/// What a broker publishes about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The broker.
    pub broker_id: u32,
    /// The incarnation of its storage in service (its WAL stream).
    pub incarnation: u64,
    /// gRPC URL.
    pub address: String,
    /// HTTP URL (metrics, health).
    #[serde(default)]
    pub http_address: String,
    /// Moving its partitions away before exiting.
    #[serde(default)]
    pub draining: bool,
    /// Bumped on every write, so readers see the heartbeat change even when
    /// nothing else did.
    pub seq: u64,
    /// The writer's wall clock (informational: liveness is judged by
    /// readers from changes they observe, never by comparing clocks).
    pub written_at_ms: i64,
    /// Load.
    #[serde(default)]
    pub load: Load,
    /// Partitions open on it.
    #[serde(default)]
    pub partitions: Vec<OwnedPartition>,
}

/// One controller term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerTerm {
    /// The broker that created the term.
    pub broker_id: u32,
    /// Its incarnation then: a restarted broker must win a new term.
    pub incarnation: u64,
}

/// Where one partition goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The broker, if assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<u32>,
    /// Placed by an operator (`strata cluster move`): the balancer leaves
    /// it alone while its broker is eligible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

/// Partition → broker for every topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The controller term that wrote it (0 for an operator's move).
    #[serde(default)]
    pub term: u64,
    /// Topic → one slot per partition.
    #[serde(default)]
    pub topics: BTreeMap<String, Vec<Slot>>,
}

impl Assignment {
    /// The broker `topic`/`partition` is assigned to.
    pub fn owner(&self, topic: &str, partition: u32) -> Option<u32> {
        self.slot(topic, partition).and_then(|s| s.broker)
    }

    /// The slot of `topic`/`partition`, if the topic is known.
    pub fn slot(&self, topic: &str, partition: u32) -> Option<Slot> {
        self.topics
            .get(topic)
            .and_then(|slots| slots.get(partition as usize))
            .copied()
    }

    /// Every `(topic, partition)` assigned to `broker`.
    pub fn partitions_of(&self, broker: u32) -> impl Iterator<Item = (&str, u32)> {
        self.topics.iter().flat_map(move |(t, slots)| {
            slots
                .iter()
                .enumerate()
                .filter(move |(_, s)| s.broker == Some(broker))
                .map(move |(p, _)| (t.as_str(), p as u32))
        })
    }

    /// Same placement (ignoring the term).
    pub fn same_placement(&self, other: &Assignment) -> bool {
        self.topics == other.topics
    }
}

/// Produce rates below this (bytes/s, averaged over partitions) are noise:
/// the balancer then balances partition counts only.
const MIN_MEAN_RATE: f64 = 64.0 * 1024.0;

/// A move must lower the busiest broker's load by at least this much (in
/// units of an average partition), so noise in rates never makes
/// partitions flap between brokers.
const MIN_GAIN: f64 = 0.5;

/// What the controller knows when it plans.
#[derive(Debug)]
pub struct PlanInput<'a> {
    /// The assignment in force.
    pub current: &'a Assignment,
    /// Live topics and their partition counts.
    pub topics: &'a [(String, u32)],
    /// Brokers that may receive partitions: alive and not draining.
    pub eligible: &'a [u32],
    /// Produce bytes/s per partition, from the owners' heartbeats.
    pub rates: &'a HashMap<(String, u32), f64>,
}

/// The next assignment: keeps every partition where it is when its broker
/// is eligible (fewest moves), gives orphaned partitions (new topics, dead
/// or draining brokers) to the least-loaded brokers, then moves partitions
/// from the busiest to the least busy broker while that lowers the peak
/// load by at least half an average partition. A partition's weight is 1
/// plus its produce rate relative to the mean rate, so both partition
/// counts and bytes in are balanced. Pinned partitions stay put unless
/// their broker is not eligible.
pub fn plan(input: &PlanInput<'_>) -> Assignment {
    let eligible: Vec<u32> = {
        let mut v = input.eligible.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut topics: BTreeMap<String, Vec<Slot>> = BTreeMap::new();
    for (name, count) in input.topics {
        let mut slots = input.current.topics.get(name).cloned().unwrap_or_default();
        slots.resize(*count as usize, Slot::default());
        for s in &mut slots {
            if s.broker.is_some_and(|b| !eligible.contains(&b)) {
                *s = Slot::default();
            }
        }
        topics.insert(name.clone(), slots);
    }
    if eligible.is_empty() {
        return Assignment { term: 0, topics };
    }

    let total: usize = topics.values().map(Vec::len).sum();
    let rate_sum: f64 = input.rates.values().sum();
    let mean_rate = if total == 0 {
        0.0
    } else {
        rate_sum / total as f64
    };
    let weight = |t: &str, p: u32| -> f64 {
        if mean_rate < MIN_MEAN_RATE {
            return 1.0;
        }
        let r = input.rates.get(&(t.to_string(), p)).copied().unwrap_or(0.0);
        1.0 + r / mean_rate
    };

    let mut load: BTreeMap<u32, f64> = eligible.iter().map(|b| (*b, 0.0)).collect();
    let mut orphans: Vec<(String, u32, f64)> = Vec::new();
    for (t, slots) in &topics {
        for (p, s) in slots.iter().enumerate() {
            let w = weight(t, p as u32);
            match s.broker {
                Some(b) => *load.entry(b).or_default() += w,
                None => orphans.push((t.clone(), p as u32, w)),
            }
        }
    }
    // Heaviest first onto the lightest broker (ties: lowest id).
    orphans.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| (&a.0, a.1).cmp(&(&b.0, b.1)))
    });
    for (t, p, w) in orphans {
        let target = lightest(&load);
        *load.entry(target).or_default() += w;
        if let Some(s) = topics.get_mut(&t).and_then(|v| v.get_mut(p as usize)) {
            s.broker = Some(target);
        }
    }

    // Rebalance: bounded by the partition count, each move strictly helps.
    for _ in 0..total {
        let heavy = heaviest(&load);
        let light = lightest(&load);
        if heavy == light {
            break;
        }
        let (lh, ll) = (load[&heavy], load[&light]);
        let mut best: Option<(String, u32, f64, f64)> = None;
        for (t, slots) in &topics {
            for (p, s) in slots.iter().enumerate() {
                if s.broker != Some(heavy) || s.pinned {
                    continue;
                }
                let w = weight(t, p as u32);
                let peak = (lh - w).max(ll + w);
                if best.as_ref().is_none_or(|b| peak < b.3) {
                    best = Some((t.clone(), p as u32, w, peak));
                }
            }
        }
        let Some((t, p, w, peak)) = best else { break };
        if peak > lh - MIN_GAIN {
            break;
        }
        if let Some(s) = topics.get_mut(&t).and_then(|v| v.get_mut(p as usize)) {
            s.broker = Some(light);
        }
        *load.entry(heavy).or_default() -= w;
        *load.entry(light).or_default() += w;
    }
    Assignment { term: 0, topics }
}

fn lightest(load: &BTreeMap<u32, f64>) -> u32 {
    let mut best: Option<(u32, f64)> = None;
    for (b, l) in load {
        if best.is_none_or(|(_, bl)| *l < bl) {
            best = Some((*b, *l));
        }
    }
    best.map_or(0, |(b, _)| b)
}

fn heaviest(load: &BTreeMap<u32, f64>) -> u32 {
    let mut best: Option<(u32, f64)> = None;
    for (b, l) in load {
        if best.is_none_or(|(_, bl)| *l > bl) {
            best = Some((*b, *l));
        }
    }
    best.map_or(0, |(b, _)| b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn counts(a: &Assignment) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for slots in a.topics.values() {
            for s in slots {
                if let Some(b) = s.broker {
                    *m.entry(b).or_default() += 1;
                }
            }
        }
        m
    }

    fn run(current: &Assignment, topics: &[(String, u32)], eligible: &[u32]) -> Assignment {
        plan(&PlanInput {
            current,
            topics,
            eligible,
            rates: &HashMap::new(),
        })
    }

    fn moves(a: &Assignment, b: &Assignment) -> usize {
        let mut n = 0;
        for (t, slots) in &b.topics {
            for (p, s) in slots.iter().enumerate() {
                if a.owner(t, p as u32) != s.broker {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn new_topic_spreads_evenly() {
        let topics = vec![("t".to_string(), 12)];
        let a = run(&Assignment::default(), &topics, &[1, 2, 3]);
        assert_eq!(counts(&a), BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
    }

    #[test]
    fn stable_when_balanced_and_minimal_on_join_and_leave() {
        let topics = vec![("a".to_string(), 7), ("b".to_string(), 5)];
        let one = run(&Assignment::default(), &topics, &[1]);
        assert_eq!(counts(&one), BTreeMap::from([(1, 12)]));
        assert_eq!(run(&one, &topics, &[1]), one, "no change, no moves");
        // Scale out: only what the new brokers need moves.
        let three = run(&one, &topics, &[1, 2, 3]);
        assert_eq!(counts(&three), BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
        assert_eq!(moves(&one, &three), 8);
        assert_eq!(run(&three, &topics, &[1, 2, 3]), three);
        // Broker 2 drains: its 4 partitions move, nothing else.
        let two = run(&three, &topics, &[1, 3]);
        assert_eq!(counts(&two), BTreeMap::from([(1, 6), (3, 6)]));
        assert_eq!(moves(&three, &two), 4);
    }

    #[test]
    fn pinned_partitions_stay_until_their_broker_goes() {
        let topics = vec![("t".to_string(), 4)];
        let mut a = run(&Assignment::default(), &topics, &[1, 2]);
        for s in a.topics.get_mut("t").unwrap() {
            *s = Slot {
                broker: Some(1),
                pinned: true,
            };
        }
        let b = run(&a, &topics, &[1, 2]);
        assert_eq!(counts(&b), BTreeMap::from([(1, 4)]), "pinned stay put");
        let c = run(&a, &topics, &[2]);
        assert_eq!(counts(&c), BTreeMap::from([(2, 4)]));
        assert!(
            c.topics["t"].iter().all(|s| !s.pinned),
            "pins to a gone broker are dropped"
        );
    }

    #[test]
    fn hot_partitions_are_spread_by_bytes() {
        let topics = vec![("t".to_string(), 4)];
        // Two hot partitions on broker 1, two cold on broker 2.
        let mut current = Assignment::default();
        current.topics.insert(
            "t".into(),
            [1, 1, 2, 2]
                .iter()
                .map(|b| Slot {
                    broker: Some(*b),
                    pinned: false,
                })
                .collect(),
        );
        let rates = HashMap::from([
            (("t".to_string(), 0), 10e6),
            (("t".to_string(), 1), 10e6),
            (("t".to_string(), 2), 1e3),
            (("t".to_string(), 3), 1e3),
        ]);
        let a = plan(&PlanInput {
            current: &current,
            topics: &topics,
            eligible: &[1, 2],
            rates: &rates,
        });
        assert_ne!(
            a.owner("t", 0),
            a.owner("t", 1),
            "hot partitions split: {a:?}"
        );
        assert_eq!(counts(&a), BTreeMap::from([(1, 2), (2, 2)]));
    }

    #[test]
    fn deleted_topics_and_shrunk_lists_disappear_and_no_eligible_broker_unassigns() {
        let topics = vec![("a".to_string(), 2)];
        let mut current = run(
            &Assignment::default(),
            &[("a".into(), 2), ("gone".into(), 3)],
            &[1],
        );
        current.term = 7;
        let a = run(&current, &topics, &[1]);
        assert!(!a.topics.contains_key("gone"));
        let none = run(&a, &topics, &[]);
        assert!(none.topics["a"].iter().all(|s| s.broker.is_none()));
    }
}
