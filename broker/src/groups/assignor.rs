//! The server-side assignor: balanced and sticky (Kafka's `uniform`
//! assignor of KIP-848, simplified).
//!
//! 1. Every partition keeps its previous owner if that member is still in
//!    the group and still subscribes to the topic.
//! 2. The others go, fewest eligible members first, to the eligible member
//!    with the fewest partitions.
//! 3. While a member has two partitions more than another member that may
//!    take one of them, one moves (from the fullest member to the emptiest
//!    first): only the moves balance needs, nothing else.
//!
//! With every member subscribing to the same topics, members end within one
//! partition of each other. Pure: no IO, no clock, deterministic (members
//! and partitions are ordered).

use std::collections::{BTreeMap, BTreeSet};

use super::state::{Partitions, Tp};

/// The assignment of `partitions` (every partition of every subscribed
/// topic, by topic) to `members` (member id → subscribed topics), sticky to
/// `previous` (member id → partitions).
pub fn assign(
    members: &BTreeMap<String, BTreeSet<String>>,
    partition_counts: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, Partitions>,
) -> BTreeMap<String, Partitions> {
    let mut out: BTreeMap<String, Partitions> = members
        .keys()
        .map(|m| (m.clone(), Partitions::new()))
        .collect();
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
