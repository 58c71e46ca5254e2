//! The server-side assignors of KIP-848: `uniform` (the default) and
//! `range`. A group uses the one most of its members ask for
//! ([`Assignor::of_group`]).
//!
//! ## `uniform`: balanced and sticky (Kafka's, simplified)
//! 1. Every partition keeps its previous owner if that member is still in
//!    the group and still subscribes to the topic.
//! 2. The others go, fewest eligible members first, to the eligible member
//!    with the fewest partitions.
//! 3. While a member has two partitions more than another member that may
//!    take one of them, one moves (from the fullest member to the emptiest
//!    first): only the moves balance needs, nothing else.
//!
//! With every member subscribing to the same topics, members end within one
//! partition of each other.
//!
//! ## `range`: co-partitioned
//! Topics with as many partitions and the same subscribers are split as
//! one: their partitions are split among the subscribers (in member id
//! order) into shares that differ by at most one, the larger shares going
//! first to members that held more before. Each member keeps what it held
//! up to its share (in the topic of the lot whose subscribers held most);
//! the rest go, lowest partition first, to members short of theirs, in
//! member id order. From scratch every member gets a contiguous range, and
//! always the same partition numbers of every topic of the lot, so a
//! member that joins `orders` with `payments` by key reads both halves of
//! a key (Kafka's co-partitioning), a topic created later included.
//!
//! Pure: no IO, no clock, deterministic (members and partitions are
//! ordered).

use std::collections::{BTreeMap, BTreeSet};

use super::state::{Partitions, Tp};

/// A server-side assignor, by Kafka's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Assignor {
    /// Balanced and sticky: the default.
    #[default]
    Uniform,
    /// Co-partitioned ranges per topic.
    Range,
}

impl Assignor {
    /// Every assignor, the default first.
    pub const ALL: [Assignor; 2] = [Assignor::Uniform, Assignor::Range];

    /// Kafka's name (`group.remote.assignor`).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The assignor named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The assignor of a group whose members ask for `asked` (`None`: no
    /// preference): the one most ask for, ties and no preference going to
    /// the default.
    pub fn of_group<'a>(asked: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for a in asked.into_iter().flatten().filter_map(Self::parse) {
            *votes.entry(a).or_default() += 1;
        }
        // max_by_key keeps the last maximum: iterate from the least
        // preferred so ties go to the earlier in ALL.
        votes
            .into_iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map_or_else(Self::default, |(a, _)| a)
    }

    /// The assignment of every partition of `partition_counts` to
    /// `members` (member id → subscribed topics), sticky to `previous`.
    pub fn assign(
        self,
        members: &BTreeMap<String, BTreeSet<String>>,
        partition_counts: &BTreeMap<String, u32>,
        previous: &BTreeMap<String, Partitions>,
    ) -> BTreeMap<String, Partitions> {
        match self {
            Assignor::Uniform => assign(members, partition_counts, previous),
            Assignor::Range => range(members, partition_counts, previous),
        }
    }
}

/// Every member with no partition.
fn nothing_yet(members: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, Partitions> {
    members
        .keys()
        .map(|m| (m.clone(), Partitions::new()))
        .collect()
}

/// The `range` assignment (see the module docs).
pub fn range(
    members: &BTreeMap<String, BTreeSet<String>>,
    partition_counts: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, Partitions>,
) -> BTreeMap<String, Partitions> {
    let mut out = nothing_yet(members);
    // What each member held, by topic.
    let mut held: BTreeMap<&str, BTreeMap<&str, Vec<u32>>> = BTreeMap::new();
    for (m, set) in previous {
        for (t, p) in set {
            held.entry(t.as_str())
                .or_default()
                .entry(m.as_str())
                .or_default()
                .push(*p);
        }
    }
    // Topics with as many partitions and the same subscribers are split
    // as one, so they stay co-partitioned whatever their history.
    let mut alike: BTreeMap<(u32, Vec<&str>), Vec<&str>> = BTreeMap::new();
    for (topic, &count) in partition_counts {
        let subscribers: Vec<&str> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m.as_str())
            .collect();
        if !subscribers.is_empty() && count > 0 {
            alike
                .entry((count, subscribers))
                .or_default()
                .push(topic.as_str());
        }
    }
    let none = BTreeMap::new();
    for ((count, subscribers), topics) in alike {
        let held_in = |t: &str| -> BTreeMap<&str, Vec<u32>> {
            let of_topic = held.get(t).unwrap_or(&none);
            subscribers
                .iter()
                .map(|m| {
                    let ps = of_topic.get(m).map_or_else(Vec::new, |ps| {
                        ps.iter().copied().filter(|p| *p < count).collect()
                    });
                    (*m, ps)
                })
                .collect()
        };
        // The history to keep: the topic whose subscribers held most.
        let reference = topics
            .iter()
            .max_by_key(|t| {
                let n: usize = held_in(t).values().map(Vec::len).sum();
                (n, std::cmp::Reverse(**t))
            })
            .map_or_else(BTreeMap::new, |t| held_in(t));
        for (m, ps) in shares(count, &subscribers, &reference) {
            if let Some(set) = out.get_mut(m) {
                for t in &topics {
                    set.extend(ps.iter().map(|p| ((*t).to_owned(), *p)));
                }
            }
        }
    }
    out
}

/// Partitions `0..count` split among `subscribers` (in order) into shares
/// that differ by at most one, each keeping what it `held` up to its
/// share (see the module docs).
fn shares<'a>(
    count: u32,
    subscribers: &[&'a str],
    held: &BTreeMap<&str, Vec<u32>>,
) -> BTreeMap<&'a str, Vec<u32>> {
    let n = u32::try_from(subscribers.len()).unwrap_or(u32::MAX).max(1);
    let (min, mut extra) = (count / n, count % n);
    let held_by = |m: &str| held.get(m).map_or(&[][..], Vec::as_slice);
    let len = |v: &[u32]| u32::try_from(v.len()).unwrap_or(u32::MAX);
    // The larger shares first to members that held more.
    let mut share: BTreeMap<&str, u32> = subscribers.iter().map(|m| (*m, min)).collect();
    for held_more in [true, false] {
        for m in subscribers {
            if extra > 0 && (len(held_by(m)) > min) == held_more && share[m] == min {
                share.insert(m, min + 1);
                extra -= 1;
            }
        }
    }
    // Each keeps what it held, up to its share (a partition once).
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut got: BTreeMap<&'a str, Vec<u32>> = BTreeMap::new();
    for m in subscribers {
        let mine = got.entry(*m).or_default();
        for p in held_by(m) {
            if len(mine) < share[m] && taken.insert(*p) {
                mine.push(*p);
            }
        }
    }
    // The rest, lowest first, to members short of their share.
    let mut free = (0..count).filter(|p| !taken.contains(p));
    for m in subscribers {
        let mine = got.entry(*m).or_default();
        while len(mine) < share[m] {
            match free.next() {
                Some(p) => mine.push(p),
                None => break,
            }
        }
    }
    got
}

/// The assignment of `partitions` (every partition of every subscribed
/// topic, by topic) to `members` (member id → subscribed topics), sticky to
/// `previous` (member id → partitions).
pub fn assign(
    members: &BTreeMap<String, BTreeSet<String>>,
    partition_counts: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, Partitions>,
) -> BTreeMap<String, Partitions> {
    let mut out = nothing_yet(members);
    let eligible = |tp: &Tp, member: &str| {
        members
            .get(member)
            .is_some_and(|topics| topics.contains(&tp.0))
    };
    // Every partition, with its subscribers.
    let mut all: Vec<(Tp, Vec<&String>)> = Vec::new();
    for (topic, &count) in partition_counts {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        for p in 0..count {
            all.push(((topic.clone(), p), subscribers.clone()));
        }
    }
    // 1. Sticky.
    let mut owner: BTreeMap<Tp, String> = BTreeMap::new();
    for (member, parts) in previous {
        for tp in parts {
            let exists = partition_counts.get(&tp.0).is_some_and(|&n| tp.1 < n);
            if exists && eligible(tp, member) && !owner.contains_key(tp) {
                owner.insert(tp.clone(), member.clone());
            }
        }
    }
    for (tp, m) in &owner {
        if let Some(set) = out.get_mut(m) {
            set.insert(tp.clone());
        }
    }
    // 2. The unowned, most constrained first.
    let mut unowned: Vec<&(Tp, Vec<&String>)> = all
        .iter()
        .filter(|(tp, _)| !owner.contains_key(tp))
        .collect();
    unowned.sort_by_key(|(tp, subs)| (subs.len(), tp.clone()));
    for (tp, subs) in unowned {
        let Some(m) = subs
            .iter()
            .min_by_key(|m| (out[m.as_str()].len(), m.as_str()))
        else {
            continue;
        };
        if let Some(set) = out.get_mut(m.as_str()) {
            set.insert(tp.clone());
        }
    }
    // 3. Balance with as few moves as possible.
    let bound = all.len() * members.len().max(1);
    for _ in 0..bound {
        if !move_one(&mut out, &eligible) {
            break;
        }
    }
    out
}

/// Moves one partition from a member to one with at least two fewer that
/// may take it (fullest giver, emptiest taker first). False when balanced.
fn move_one(out: &mut BTreeMap<String, Partitions>, eligible: &impl Fn(&Tp, &str) -> bool) -> bool {
    let mut by_size: Vec<(usize, String)> = out.iter().map(|(m, s)| (s.len(), m.clone())).collect();
    by_size.sort();
    for (big, giver) in by_size.iter().rev() {
        for (small, taker) in &by_size {
            if small + 1 >= *big {
                break;
            }
            let candidate = out[giver]
                .iter()
                .rev()
                .find(|tp| eligible(tp, taker))
                .cloned();
            if let Some(tp) = candidate {
                out.get_mut(giver).map(|s| s.remove(&tp));
                out.get_mut(taker).map(|s| s.insert(tp));
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        ids.iter()
            .map(|m| {
                (
                    (*m).to_owned(),
                    topics.iter().map(|t| (*t).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn counts(c: &[(&str, u32)]) -> BTreeMap<String, u32> {
        c.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn sizes(a: &BTreeMap<String, Partitions>) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    /// Partitions members of both `a` and `b` lost from `a` to `b`.
    fn moved(a: &BTreeMap<String, Partitions>, b: &BTreeMap<String, Partitions>) -> usize {
        a.iter()
            .filter(|(m, _)| b.contains_key(*m))
            .map(|(m, set)| {
                set.iter()
                    .filter(|tp| !b.get(m).is_some_and(|s| s.contains(tp)))
                    .count()
            })
            .sum()
    }

    #[test]
    fn every_partition_goes_to_exactly_one_member_in_balance() {
        let m = members(&["a", "b", "c"], &["orders"]);
        let a = assign(&m, &counts(&[("orders", 12)]), &BTreeMap::new());
        assert_eq!(sizes(&a), [4, 4, 4]);
        let all: BTreeSet<&Tp> = a.values().flatten().collect();
        assert_eq!(all.len(), 12);
    }

    #[test]
    fn a_joining_member_takes_only_what_balance_needs() {
        let three = members(&["a", "b", "c"], &["orders"]);
        let c = counts(&[("orders", 12)]);
        let before = assign(&three, &c, &BTreeMap::new());
        let four = members(&["a", "b", "c", "d"], &["orders"]);
        let after = assign(&four, &c, &before);
        assert_eq!(sizes(&after), [3, 3, 3, 3]);
        // Three partitions move (one from each old member), to d.
        assert_eq!(moved(&before, &after), 3);
        assert_eq!(after["d"].len(), 3);
        // And back: d's three go back, the rest stays.
        let back = assign(&three, &c, &after);
        assert_eq!(sizes(&back), [4, 4, 4]);
        assert_eq!(moved(&after, &back), 0, "nobody loses a partition");
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to() {
        let mut m = members(&["a"], &["orders", "payments"]);
        m.extend(members(&["b"], &["orders"]));
        let a = assign(
            &m,
            &counts(&[("orders", 4), ("payments", 2), ("other", 3)]),
            &BTreeMap::new(),
        );
        assert!(a["b"].iter().all(|tp| tp.0 == "orders"));
        assert_eq!(a.values().map(BTreeSet::len).sum::<usize>(), 6);
        assert_eq!(sizes(&a), [3, 3]);
    }

    fn partitions_of(a: &Partitions, topic: &str) -> Vec<u32> {
        a.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect()
    }

    #[test]
    fn range_gives_contiguous_co_partitioned_shares() {
        let m = members(&["a", "b", "c"], &["orders", "payments"]);
        let c = counts(&[("orders", 8), ("payments", 8)]);
        let r = range(&m, &c, &BTreeMap::new());
        assert_eq!(partitions_of(&r["a"], "orders"), [0, 1, 2]);
        assert_eq!(partitions_of(&r["b"], "orders"), [3, 4, 5]);
        assert_eq!(partitions_of(&r["c"], "orders"), [6, 7]);
        for who in ["a", "b", "c"] {
            assert_eq!(
                partitions_of(&r[who], "orders"),
                partitions_of(&r[who], "payments"),
                "{who}: the same partition numbers of both topics"
            );
        }
        // A member joins: every partition still goes once, shares differ
        // by at most one, the topics stay co-partitioned, and members keep
        // what their share allows.
        let four = members(&["a", "b", "c", "d"], &["orders", "payments"]);
        let r2 = range(&four, &c, &r);
        assert_eq!(sizes(&r2), [4, 4, 4, 4]);
        for who in ["a", "b", "c", "d"] {
            assert_eq!(
                partitions_of(&r2[who], "orders"),
                partitions_of(&r2[who], "payments")
            );
        }
        assert_eq!(partitions_of(&r2["a"], "orders"), [0, 1]);
        assert_eq!(partitions_of(&r2["c"], "orders"), [6, 7], "c keeps its two");
        let all: BTreeSet<&Tp> = r2.values().flatten().collect();
        assert_eq!(all.len(), 16);
        // A topic created later with as many partitions lines up with
        // the others, though it has no history.
        let three_topics = members(&["a", "b", "c", "d"], &["orders", "payments", "refunds"]);
        let c3 = counts(&[("orders", 8), ("payments", 8), ("refunds", 8)]);
        let r4 = range(&three_topics, &c3, &r2);
        for who in ["a", "b", "c", "d"] {
            assert_eq!(
                partitions_of(&r4[who], "orders"),
                partitions_of(&r2[who], "orders")
            );
            assert_eq!(
                partitions_of(&r4[who], "refunds"),
                partitions_of(&r4[who], "orders")
            );
        }
        // Only subscribers get a topic's partitions.
        let mut mixed = members(&["a"], &["orders"]);
        mixed.extend(members(&["b"], &["payments"]));
        let r3 = range(&mixed, &c, &BTreeMap::new());
        assert_eq!(partitions_of(&r3["a"], "orders").len(), 8);
        assert!(partitions_of(&r3["a"], "payments").is_empty());
    }

    #[test]
    fn a_group_uses_the_assignor_most_members_ask_for() {
        assert_eq!(Assignor::of_group([None, None]), Assignor::Uniform);
        assert_eq!(Assignor::of_group([Some("range"), None]), Assignor::Range);
        assert_eq!(
            Assignor::of_group([Some("range"), Some("uniform")]),
            Assignor::Uniform,
            "a tie goes to the default"
        );
        assert_eq!(
            Assignor::of_group([Some("range"), Some("range"), Some("uniform")]),
            Assignor::Range
        );
        assert_eq!(Assignor::parse("sticky"), None);
    }

    #[test]
    fn partitions_of_a_shrunk_or_unsubscribed_topic_are_dropped() {
        let m = members(&["a"], &["orders"]);
        let prev: BTreeMap<String, Partitions> = [(
            "a".to_owned(),
            [("orders".to_owned(), 7), ("gone".to_owned(), 0)]
                .into_iter()
                .collect(),
        )]
        .into_iter()
        .collect();
        let a = assign(&m, &counts(&[("orders", 2)]), &prev);
        assert_eq!(a["a"].len(), 2);
        assert!(a["a"].iter().all(|tp| tp.0 == "orders" && tp.1 < 2));
    }
}
