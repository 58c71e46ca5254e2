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

/// A partition a broker serves, with its traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Produce bytes per second into it.
    #[serde(default)]
    pub bytes_in_per_sec: f64,
    /// Fetch bytes per second served from it by its owner.
    #[serde(default)]
    pub bytes_out_per_sec: f64,
}

impl OwnedPartition {
    /// Its traffic.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            bytes_in_per_sec: self.bytes_in_per_sec,
            bytes_out_per_sec: self.bytes_out_per_sec,
        }
    }
}

/// One partition's traffic, as its owner measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Produce bytes per second.
    pub bytes_in_per_sec: f64,
    /// Fetch bytes per second.
    pub bytes_out_per_sec: f64,
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
    /// Kafka listener `host:port`.
    #[serde(default)]
    pub kafka_address: String,
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
    /// The highest controller term its writer has seen: a reader that
    /// knows an older one reads the term chain, others skip that LIST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_term: Option<u64>,
    /// The highest assignment version its writer has seen (the same hint
    /// for the assignment chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_version: Option<u64>,
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

/// Rates below this (bytes/s, averaged over partitions) are noise: the
/// balancer then ignores that direction (with both below it, it balances
/// partition counts only).
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
    /// Traffic per partition, from the owners' heartbeats.
    pub rates: &'a HashMap<(String, u32), Traffic>,
    /// Move partitions between eligible brokers to even out the load. When
    /// false, only orphans are placed (the controller holds rebalancing back
    /// for a while after a rebalance, until the moved partitions' rates are
    /// measured again by their new owners).
    pub rebalance: bool,
}

/// The next assignment: keeps every partition where it is when its broker
/// is eligible (fewest moves), gives orphaned partitions (new topics, dead
/// or draining brokers) to the least-loaded brokers, then moves partitions
/// from the busiest to the least busy broker while that lowers the peak
/// load by at least half an average partition. A partition's weight is
/// `1 + in / mean_in + out / mean_out` (its produce and fetch rates relative
/// to the means over all partitions; a direction whose mean is below
/// [`MIN_MEAN_RATE`] counts 0), so partition counts, bytes in and bytes out
/// are balanced together. Pinned partitions stay put unless their broker is
/// not eligible.
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
    let mean = |f: fn(&Traffic) -> f64| -> Option<f64> {
        let sum: f64 = input.rates.values().map(f).sum();
        let mean = if total == 0 { 0.0 } else { sum / total as f64 };
        (mean >= MIN_MEAN_RATE).then_some(mean)
    };
    let mean_in = mean(|t| t.bytes_in_per_sec);
    let mean_out = mean(|t| t.bytes_out_per_sec);
    let weight = |t: &str, p: u32| -> f64 {
        let r = input
            .rates
            .get(&(t.to_string(), p))
            .copied()
            .unwrap_or_default();
        1.0 + mean_in.map_or(0.0, |m| r.bytes_in_per_sec / m)
            + mean_out.map_or(0.0, |m| r.bytes_out_per_sec / m)
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

    if !input.rebalance {
        return Assignment { term: 0, topics };
    }
    // Rebalance: bounded by the partition count; each step lowers the
    // busiest broker's load by at least MIN_GAIN. A step moves one partition
    // from the busiest to the least busy broker, or, when no single move
    // helps (a few hot partitions among cold ones), swaps a hot partition
    // for a colder one, which keeps partition counts as they are.
    for _ in 0..total {
        let heavy = heaviest(&load);
        let light = lightest(&load);
        if heavy == light {
            break;
        }
        let (lh, ll) = (load[&heavy], load[&light]);
        let movable = |b: u32| -> Vec<((String, u32), f64)> {
            let mut v = Vec::new();
            for (t, slots) in &topics {
                for (p, s) in slots.iter().enumerate() {
                    if s.broker == Some(b) && !s.pinned {
                        v.push(((t.clone(), p as u32), weight(t, p as u32)));
                    }
                }
            }
            v
        };
        let from_heavy = movable(heavy);
        // (partition to light, partition to heavy, weight delta, new peak)
        let mut best: Option<Step> = None;
        for (tp, w) in &from_heavy {
            Step::keep_better(
                &mut best,
                Step {
                    out: tp.clone(),
                    back: None,
                    delta: *w,
                    peak: (lh - w).max(ll + w),
                },
            );
        }
        if best.as_ref().is_none_or(|b| b.peak > lh - MIN_GAIN) {
            let mut from_light = movable(light);
            from_light.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (tp, w) in &from_heavy {
                // The ideal partner weighs `w - (lh - ll) / 2`; look at the
                // two nearest.
                let ideal = w - (lh - ll) / 2.0;
                let i = from_light.partition_point(|(_, lw)| *lw < ideal);
                for (back, lw) in
                    from_light[i.saturating_sub(1)..(i + 1).min(from_light.len())].iter()
                {
                    let delta = w - lw;
                    if delta > 0.0 {
                        Step::keep_better(
                            &mut best,
                            Step {
                                out: tp.clone(),
                                back: Some(back.clone()),
                                delta,
                                peak: (lh - delta).max(ll + delta),
                            },
                        );
                    }
                }
            }
        }
        let Some(step) = best else { break };
        if step.peak > lh - MIN_GAIN {
            break;
        }
        let mut place = |(t, p): &(String, u32), b: u32| {
            if let Some(s) = topics.get_mut(t).and_then(|v| v.get_mut(*p as usize)) {
                s.broker = Some(b);
            }
        };
        place(&step.out, light);
        if let Some(back) = &step.back {
            place(back, heavy);
        }
        *load.entry(heavy).or_default() -= step.delta;
        *load.entry(light).or_default() += step.delta;
    }
    Assignment { term: 0, topics }
}

/// Folds the rates just reported into the running estimates `smoothed`
/// (exponentially weighted, `alpha` per round), so bursty readers and
/// writers do not make the balancer chase noise. A partition not reported
/// this round (it is moving) keeps its estimate; one reported for the first
/// time starts at its report.
pub fn smooth(
    smoothed: &mut HashMap<(String, u32), Traffic>,
    reported: &HashMap<(String, u32), Traffic>,
    alpha: f64,
) {
    for (tp, r) in reported {
        smoothed
            .entry(tp.clone())
            .and_modify(|s| {
                s.bytes_in_per_sec += alpha * (r.bytes_in_per_sec - s.bytes_in_per_sec);
                s.bytes_out_per_sec += alpha * (r.bytes_out_per_sec - s.bytes_out_per_sec);
            })
            .or_insert(*r);
    }
}

/// One rebalancing step: `out` goes from the busiest broker to the least
/// busy one, and `back` (for a swap) the other way.
struct Step {
    out: (String, u32),
    back: Option<(String, u32)>,
    /// Load that leaves the busiest broker.
    delta: f64,
    /// The larger of the two brokers' loads afterwards.
    peak: f64,
}

impl Step {
    /// Keeps the step with the lower peak in `best`.
    fn keep_better(best: &mut Option<Step>, step: Step) {
        if best.as_ref().is_none_or(|b| step.peak < b.peak) {
            *best = Some(step);
        }
    }
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

    type Rates = HashMap<(String, u32), Traffic>;

    fn plan_with(
        current: &Assignment,
        topics: &[(String, u32)],
        eligible: &[u32],
        rates: &Rates,
    ) -> Assignment {
        plan(&PlanInput {
            current,
            topics,
            eligible,
            rates,
            rebalance: true,
        })
    }

    fn run(current: &Assignment, topics: &[(String, u32)], eligible: &[u32]) -> Assignment {
        plan_with(current, topics, eligible, &HashMap::new())
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

    fn inbound(bytes_in_per_sec: f64) -> Traffic {
        Traffic {
            bytes_in_per_sec,
            bytes_out_per_sec: 0.0,
        }
    }

    fn outbound(bytes_out_per_sec: f64) -> Traffic {
        Traffic {
            bytes_in_per_sec: 0.0,
            bytes_out_per_sec,
        }
    }

    fn placed(owners: &[u32]) -> Assignment {
        let mut a = Assignment::default();
        a.topics.insert(
            "t".into(),
            owners
                .iter()
                .map(|b| Slot {
                    broker: Some(*b),
                    pinned: false,
                })
                .collect(),
        );
        a
    }

    #[test]
    fn hot_partitions_are_spread_by_bytes_out() {
        // Equal counts and equal produce rates, but partitions 0 and 1 (both
        // on broker 1) have many consumers: broker 1 serves ~all the fetch
        // traffic, so one of them must move and a cold one come back.
        let topics = vec![("t".to_string(), 4)];
        let current = placed(&[1, 1, 2, 2]);
        let both = |out: f64| Traffic {
            bytes_in_per_sec: 1e6,
            bytes_out_per_sec: out,
        };
        let rates = HashMap::from([
            (("t".to_string(), 0), both(30e6)),
            (("t".to_string(), 1), both(30e6)),
            (("t".to_string(), 2), both(1e3)),
            (("t".to_string(), 3), both(1e3)),
        ]);
        let a = plan_with(&current, &topics, &[1, 2], &rates);
        assert_ne!(a.owner("t", 0), a.owner("t", 1), "readers split: {a:?}");
        assert_eq!(counts(&a), BTreeMap::from([(1, 2), (2, 2)]));
        assert_eq!(moves(&current, &a), 2, "one swap, nothing else: {a:?}");

        // Fetch rates that are noise (mean below MIN_MEAN_RATE) move nothing.
        let quiet = HashMap::from([
            (("t".to_string(), 0), outbound(100.0)),
            (("t".to_string(), 1), outbound(100.0)),
        ]);
        let b = plan_with(&current, &topics, &[1, 2], &quiet);
        assert_eq!(b, current);
    }

    #[test]
    fn smoothing_follows_reports_and_keeps_moving_partitions() {
        let mut s = HashMap::new();
        let t0 = ("t".to_string(), 0);
        let t1 = ("t".to_string(), 1);
        smooth(&mut s, &HashMap::from([(t0.clone(), outbound(100.0))]), 0.5);
        assert_eq!(s[&t0].bytes_out_per_sec, 100.0, "first report taken as is");
        smooth(&mut s, &HashMap::from([(t0.clone(), outbound(0.0))]), 0.5);
        assert_eq!(s[&t0].bytes_out_per_sec, 50.0);
        // t0 is moving (nobody reports it): its estimate stays.
        smooth(&mut s, &HashMap::from([(t1.clone(), inbound(8.0))]), 0.5);
        assert_eq!(s[&t0].bytes_out_per_sec, 50.0);
        assert_eq!(s[&t1].bytes_in_per_sec, 8.0);
    }

    #[test]
    fn without_rebalance_only_orphans_are_placed() {
        let topics = vec![("t".to_string(), 5)];
        let mut current = placed(&[1, 1, 1, 1]);
        current.topics.get_mut("t").unwrap().push(Slot::default());
        let a = plan(&PlanInput {
            current: &current,
            topics: &topics,
            eligible: &[1, 2],
            rates: &HashMap::new(),
            rebalance: false,
        });
        assert_eq!(
            a.owner("t", 4),
            Some(2),
            "the orphan goes to the lighter broker"
        );
        assert_eq!(
            counts(&a),
            BTreeMap::from([(1, 4), (2, 1)]),
            "nothing else moves"
        );
    }

    #[test]
    fn hot_partitions_are_spread_by_bytes() {
        let topics = vec![("t".to_string(), 4)];
        // Two hot partitions on broker 1, two cold on broker 2.
        let current = placed(&[1, 1, 2, 2]);
        let rates = HashMap::from([
            (("t".to_string(), 0), inbound(10e6)),
            (("t".to_string(), 1), inbound(10e6)),
            (("t".to_string(), 2), inbound(1e3)),
            (("t".to_string(), 3), inbound(1e3)),
        ]);
        let a = plan_with(&current, &topics, &[1, 2], &rates);
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

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Topics with their slots (owner in 0..6 or none, sometimes
        /// pinned), the eligible brokers, and per-partition traffic.
        fn cluster() -> impl Strategy<Value = (Assignment, Vec<(String, u32)>, Vec<u32>, Rates)> {
            let slot = (proptest::option::of(0u32..6), proptest::bool::weighted(0.1))
                .prop_map(|(broker, pinned)| Slot { broker, pinned });
            let topic = proptest::collection::vec(slot, 1..24);
            let rate = prop_oneof![Just(0.0), 0.0..50e6f64];
            (
                proptest::collection::vec(topic, 1..4),
                proptest::collection::btree_set(0u32..6, 0..5),
                proptest::collection::vec((rate.clone(), rate), 72),
            )
                .prop_map(|(topics, eligible, rates)| {
                    let mut current = Assignment::default();
                    let mut names = Vec::new();
                    let mut traffic = HashMap::new();
                    let mut r = rates.into_iter().cycle();
                    for (i, slots) in topics.into_iter().enumerate() {
                        let name = format!("t{i}");
                        names.push((name.clone(), slots.len() as u32));
                        for p in 0..slots.len() as u32 {
                            let (i, o) = r.next().unwrap_or_default();
                            traffic.insert(
                                (name.clone(), p),
                                Traffic {
                                    bytes_in_per_sec: i,
                                    bytes_out_per_sec: o,
                                },
                            );
                        }
                        current.topics.insert(name, slots);
                    }
                    (current, names, eligible.into_iter().collect(), traffic)
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Every partition lands on an eligible broker, pins on
            /// eligible brokers hold, and planning again with the same
            /// figures changes nothing (the balancer never flaps).
            #[test]
            fn plans_are_complete_respect_pins_and_are_stable(
                (current, topics, eligible, rates) in cluster()
            ) {
                let next = plan_with(&current, &topics, &eligible, &rates);
                for (t, slots) in &next.topics {
                    for (p, s) in slots.iter().enumerate() {
                        if eligible.is_empty() {
                            prop_assert_eq!(s.broker, None);
                            continue;
                        }
                        let b = s.broker;
                        prop_assert!(b.is_some_and(|b| eligible.contains(&b)), "{t}/{p} -> {b:?}");
                        let before = current.slot(t, p as u32).unwrap_or_default();
                        if before.pinned && before.broker.is_some_and(|b| eligible.contains(&b)) {
                            prop_assert_eq!(s.broker, before.broker, "{}/{} was pinned", t, p);
                        }
                    }
                }
                let again = plan_with(&next, &topics, &eligible, &rates);
                prop_assert!(again.same_placement(&next), "flaps: {next:?} -> {again:?}");
            }

            /// Without traffic and pins, partition counts differ by at most
            /// one between eligible brokers.
            #[test]
            fn counts_balance_without_traffic(
                (mut current, topics, eligible, _rates) in cluster()
            ) {
                prop_assume!(!eligible.is_empty());
                for slots in current.topics.values_mut() {
                    for s in slots {
                        s.pinned = false;
                    }
                }
                let next = plan_with(&current, &topics, &eligible, &HashMap::new());
                let c = counts(&next);
                let per: Vec<usize> = eligible.iter().map(|b| c.get(b).copied().unwrap_or(0)).collect();
                let (lo, hi) = (per.iter().min().copied().unwrap_or(0), per.iter().max().copied().unwrap_or(0));
                prop_assert!(hi - lo <= 1, "counts {c:?} over {eligible:?}");
            }
        }
    }
}
