//! The controller and the assignment chain.
//!
//! Election: the broker that created the highest `cluster/controller/{term}`
//! (create-only) is the controller while its heartbeat is alive, with the
//! same incarnation, and it is not draining; otherwise any broker runs for
//! the next term and create-only picks one winner. Every broker reads the
//! assignment head it follows ([`refresh_assignment`]). The controller's
//! pass plans a placement ([`model::plan`]) from the live, non-draining
//! brokers and smoothed partition rates, and publishes a new
//! `cluster/assignment/{version}` when the placement changed; an operator's
//! [`move_partition`] publishes a pinned slot the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use strata_storage::chain::Chain;
use strata_storage::keys::{self, TopicPartition, Version};

use super::membership::forget_dead;
use super::model::{self, Assignment, ControllerTerm, PlanInput, Slot, Traffic};
use super::round::Look;
use super::view::partition_rates;
use crate::error::{BrokerError, Result};
use crate::service::Shared;

/// The controller re-reads every topic's head (to see deletes made on other
/// brokers that were not announced to it) once in this many of its rounds;
/// other rounds trust its cache.
const FRESH_TOPICS_EVERY: u64 = 10;

/// Weight of a round's rate reports in the controller's running estimates
/// (`model::smooth`).
const RATE_SMOOTHING: f64 = 0.3;

/// After a rebalance moved partitions, the controller only places orphans
/// for this many heartbeat intervals: the moved partitions' rates are
/// measured afresh by their new owners meanwhile, and the estimates settle
/// instead of making partitions flap.
const REBALANCE_COOLDOWN_INTERVALS: u32 = 10;

/// Keep this many old controller terms and assignment versions.
const CHAIN_KEEP: u64 = 20;

/// What the controller keeps between rounds to keep the balancer calm.
#[derive(Debug, Default)]
pub(super) struct Balancer {
    /// Smoothed traffic per partition.
    rates: HashMap<(String, u32), Traffic>,
    /// When a rebalance last moved partitions.
    moved_at: Option<Instant>,
}

/// Reads the controller term and, when its holder is gone, runs for the
/// next one.
pub(super) async fn elect(shared: &Shared, look: Look) -> Result<()> {
    let view = &shared.cluster;
    let chain: Chain<ControllerTerm> =
        Chain::new(shared.meta_store.clone(), keys::controller_chain());
    let me = shared.broker_id.0;
    let incarnation = view.incarnation.load(Ordering::SeqCst);
    let valid = || {
        let st = view.state.read();
        st.controller.as_ref().is_some_and(|(_, c)| {
            if c.broker_id == me {
                return c.incarnation == incarnation && !view.is_draining();
            }
            st.members.get(&c.broker_id).is_some_and(|m| {
                m.hb.incarnation == c.incarnation && view.alive(m) && !m.hb.draining
            })
        })
    };
    let known = view.state.read().controller.as_ref().map(|(v, _)| *v);
    // A valid term is re-read only when someone names a newer one (or at a
    // full look); before running for a term, always.
    let hinted = view.newer_hint(known, |hb| hb.controller_term);
    if look == Look::Everything || hinted || !valid() {
        let versions = chain
            .versions(known)
            .await
            .map_err(|e| storage_err("reading the controller term", e))?;
        if let Some(&last) = versions.last()
            && Some(last) != known
        {
            match chain.read(last).await {
                Ok(term) => view.state.write().controller = Some((last, term)),
                Err(e) => return Err(storage_err("reading the controller term", e)),
            }
        }
    }
    let head = view.state.read().controller.as_ref().map(|(v, _)| *v);
    if valid() || view.is_draining() || incarnation == 0 {
        return Ok(());
    }
    if look == Look::Hinted {
        // The holder may be a broker this view has not listed yet: look
        // at everything (at once) before running for a term.
        view.round.notify_one();
        return Ok(());
    }
    let term = head.map_or(Version(0), Version::next);
    let doc = ControllerTerm {
        broker_id: me,
        incarnation,
    };
    match chain.create(term, &doc).await {
        Ok(()) => {
            tracing::info!(term = term.0, "this broker is the controller now");
            view.state.write().controller = Some((term, doc));
            if let Err(e) = chain.gc(term, CHAIN_KEEP).await {
                tracing::debug!(error = %e, "controller term garbage collection failed");
            }
            Ok(())
        }
        Err(e) if e.is_fenced() => {
            tracing::debug!(term = term.0, "another broker won the controller term");
            Ok(())
        }
        Err(e) => Err(storage_err("creating a controller term", e)),
    }
}

fn assignment_chain(shared: &Shared) -> Chain<Assignment> {
    Chain::new(shared.meta_store.clone(), keys::assignment_chain())
}

/// Reads the assignment head if it moved. Returns true when it changed.
pub(super) async fn refresh_assignment(shared: &Shared, look: Look) -> Result<bool> {
    let view = &shared.cluster;
    let chain = assignment_chain(shared);
    let known = view.state.read().assignment.as_ref().map(|(v, _)| *v);
    let hinted = view.newer_hint(known, |hb| hb.assignment_version);
    if look == Look::Hinted && known.is_some() && !hinted {
        return Ok(false);
    }
    let versions = chain
        .versions(known)
        .await
        .map_err(|e| storage_err("reading the partition assignment", e))?;
    match versions.last() {
        Some(&last) if Some(last) != known => {
            let a = chain
                .read(last)
                .await
                .map_err(|e| storage_err("reading the partition assignment", e))?;
            view.state.write().assignment = Some((last, Arc::new(a)));
            Ok(true)
        }
        // Unchanged, or no assignment was ever written (a new cluster).
        _ => Ok(false),
    }
}

/// The controller's part of a round: plan and publish.
pub(super) async fn control(shared: &Shared, look: Look) -> Result<()> {
    let view = &shared.cluster;
    // A new term starts with a fresh listing: as a follower this broker
    // only cached the topics it was told of or served.
    let term = view.state.read().controller.as_ref().map(|(v, _)| v.0);
    let new_term = std::mem::replace(&mut *view.controlling_term.lock(), term) != term;
    if new_term {
        view.control_rounds.store(0, Ordering::Relaxed);
    }
    let fresh = view
        .control_rounds
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(FRESH_TOPICS_EVERY);
    if fresh {
        forget_dead(shared).await;
    }
    // Creates and deletes on any broker reach the controller's cache by
    // their announcement (a nudge naming the topic); the listings catch
    // what an announcement missed.
    let listed = if fresh {
        shared.topics.list_fresh().await?
    } else if look == Look::Everything {
        shared.topics.list().await?
    } else {
        shared.topics.list_cached()?
    };
    let topics: Vec<(String, u32)> = listed
        .iter()
        .map(|t| (t.name.to_string(), t.record.partitions))
        .collect();
    let (current, eligible, rates, head) = {
        let st = view.state.read();
        let eligible: Vec<u32> = st
            .members
            .values()
            .filter(|m| view.alive(m) && !m.hb.draining)
            .map(|m| m.hb.broker_id)
            .collect();
        (
            st.assignment
                .as_ref()
                .map(|(_, a)| (**a).clone())
                .unwrap_or_default(),
            eligible,
            partition_rates(&st.members),
            st.assignment.as_ref().map(|(v, _)| *v),
        )
    };
    let (rates, cooling) = {
        let mut b = view.balancer.lock();
        model::smooth(&mut b.rates, &rates, RATE_SMOOTHING);
        b.rates
            .retain(|(t, _), _| topics.iter().any(|(name, _)| name == t));
        let cooldown = view.config.heartbeat_interval * REBALANCE_COOLDOWN_INTERVALS;
        (
            b.rates.clone(),
            b.moved_at.is_some_and(|t| t.elapsed() < cooldown),
        )
    };
    let input = |rebalance| PlanInput {
        current: &current,
        topics: &topics,
        eligible: &eligible,
        rates: &rates,
        rebalance,
    };
    let placed = model::plan(&input(false));
    let mut next = if cooling {
        placed
    } else {
        let balanced = model::plan(&input(true));
        if !balanced.same_placement(&placed) {
            view.balancer.lock().moved_at = Some(Instant::now());
        }
        balanced
    };
    if head.is_some() && next.same_placement(&current) {
        return Ok(());
    }
    next.term = view
        .state
        .read()
        .controller
        .as_ref()
        .map_or(0, |(v, _)| v.0);
    publish(shared, head, next, "controller").await?;
    Ok(())
}

/// Creates the assignment version after `head`; on success installs it in
/// the view, nudges every broker and returns the new version.
async fn publish(
    shared: &Shared,
    head: Option<Version>,
    next: Assignment,
    why: &str,
) -> Result<Version> {
    let view = &shared.cluster;
    let chain = assignment_chain(shared);
    let version = head.map_or(Version(0), Version::next);
    chain
        .create(version, &next)
        .await
        .map_err(|e| storage_err("publishing the partition assignment", e))?;
    let moved = {
        let st = view.state.read();
        let old = st.assignment.as_ref().map(|(_, a)| a.clone());
        count_moves(old.as_deref(), &next)
    };
    tracing::info!(
        version = version.0,
        moved,
        by = why,
        "published a new partition assignment"
    );
    view.state.write().assignment = Some((version, Arc::new(next)));
    if let Err(e) = chain.gc(version, CHAIN_KEEP).await {
        tracing::debug!(error = %e, "assignment garbage collection failed");
    }
    view.nudge();
    view.nudge_all().await;
    Ok(version)
}

fn count_moves(old: Option<&Assignment>, new: &Assignment) -> usize {
    new.topics
        .iter()
        .map(|(t, slots)| {
            slots
                .iter()
                .enumerate()
                .filter(|(p, s)| old.and_then(|o| o.owner(t, *p as u32)) != s.broker)
                .count()
        })
        .sum()
}

/// An operator's move: assigns `tp` to `to` (pinned) in a new assignment
/// version, retrying when another writer moved the chain meanwhile.
pub async fn move_partition(
    shared: &Shared,
    tp: &TopicPartition,
    to: u32,
) -> Result<(Version, Option<u32>)> {
    let view = &shared.cluster;
    let topic = shared.topics.get(&tp.topic).await?;
    if tp.partition >= topic.record.partitions {
        return Err(BrokerError::UnknownPartition {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            count: topic.record.partitions,
        });
    }
    let eligible = {
        let st = view.state.read();
        st.members
            .get(&to)
            .is_some_and(|m| view.alive(m) && !m.hb.draining)
    };
    if !eligible {
        let live: Vec<String> = view
            .live_brokers()
            .iter()
            .map(|(b, _)| b.to_string())
            .collect();
        return Err(BrokerError::InvalidRequest(format!(
            "broker {to} is not alive or is draining; live brokers: [{}] (see strata cluster status)",
            live.join(", ")
        )));
    }
    for _ in 0..10 {
        refresh_assignment(shared, Look::Everything).await?;
        let (head, current) = match view.assignment() {
            Some((v, a)) => (Some(v), (*a).clone()),
            None => (None, Assignment::default()),
        };
        let from = current.owner(tp.topic.as_str(), tp.partition);
        let mut next = current.clone();
        next.term = 0;
        let slots = next.topics.entry(tp.topic.to_string()).or_default();
        if slots.len() < topic.record.partitions as usize {
            slots.resize(topic.record.partitions as usize, Slot::default());
        }
        slots[tp.partition as usize] = Slot {
            broker: Some(to),
            pinned: true,
        };
        if head.is_some() && next.same_placement(&current) {
            return Ok((head.unwrap_or(Version(0)), from));
        }
        match publish(shared, head, next, "operator").await {
            Ok(v) => return Ok((v, from)),
            Err(e) if e.is_fenced() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(BrokerError::Unavailable(
        "too busy: the assignment kept changing during the move; retry",
    ))
}

pub(super) fn storage_err(what: &str, e: strata_storage::Error) -> BrokerError {
    BrokerError::storage(what, e)
}
