//! This broker's picture of the cluster, [`ClusterView`]: the members as
//! their heartbeats were last read, the controller term and the assignment
//! in force, and the questions the request path asks of them without IO:
//! who owns a partition ([`ClusterView::check_owner`]), which brokers are
//! alive and where, whether a claim may fence a manifest's owner
//! ([`ClusterView::may_fence`]), what `strata cluster status` shows.
//!
//! A member is alive while this broker saw its heartbeat change within
//! `cluster.heartbeat_timeout`, on this broker's own monotonic clock. The
//! cluster loop (`round`) refreshes the state; `membership` (traffic
//! counting, member updates) and `peers` (channels, nudges) add the methods
//! that belong to their jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use strata_proto::v1::{BrokerStatus, ClusterStatus, PartitionAssignment};
use strata_storage::keys::{BrokerId, TopicPartition, Version, WalStream};
use tokio::sync::Notify;
use tonic::transport::Channel;

use super::controller::Balancer;
use super::membership::{RateMeter, TrafficCount};
use super::model::{Assignment, ControllerTerm, Heartbeat, Load, Traffic};
use crate::config::ClusterConfig;
use crate::error::{BrokerError, Result};

/// A member as this broker sees it.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) hb: Heartbeat,
    /// When this broker last saw the heartbeat change.
    pub(super) changed_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct ViewState {
    pub(super) members: BTreeMap<u32, Member>,
    /// Brokers a claim found named in a manifest but this view does not
    /// know (hinted rounds only read known members): the next round reads
    /// their heartbeats.
    pub(super) wanted: BTreeSet<u32>,
    /// Brokers whose heartbeat a read found gone: they left (or were
    /// forgotten), so a claim may fence them.
    pub(super) gone: BTreeSet<u32>,
    pub(super) controller: Option<(Version, ControllerTerm)>,
    pub(super) assignment: Option<(Version, Arc<Assignment>)>,
}

/// This broker's view of the cluster, refreshed every round; read by the
/// request path (ownership, metadata) without IO.
#[derive(Debug)]
pub struct ClusterView {
    pub(super) me: BrokerId,
    pub(super) config: ClusterConfig,
    pub(super) state: RwLock<ViewState>,
    /// Incarnation of the storage engine in service.
    pub(super) incarnation: AtomicU64,
    pub(super) draining: AtomicBool,
    /// Wakes the cluster loop for an early round.
    pub(super) round: Notify,
    /// Wakes claims waiting for a previous owner's release.
    pub(super) released: Notify,
    /// Per-partition produce and fetch bytes (for the heartbeat's rates).
    pub(super) traffic: Mutex<HashMap<TopicPartition, TrafficCount>>,
    /// The load last published.
    pub(super) load: Mutex<Load>,
    /// Controller rounds run in the current term.
    pub(super) control_rounds: AtomicU64,
    /// The term those rounds ran in.
    pub(super) controlling_term: Mutex<Option<u64>>,
    /// Sequence number of the next heartbeat.
    pub(super) hb_seq: AtomicU64,
    /// Counters at the last heartbeat, for rates.
    pub(super) meter: Mutex<Option<RateMeter>>,
    /// The controller's memory between rounds.
    pub(super) balancer: Mutex<Balancer>,
    pub(super) channels: Mutex<HashMap<String, Channel>>,
    /// How to connect to the other brokers (TLS); set once at start.
    pub(super) peer_options: std::sync::OnceLock<strata_client::ConnectOptions>,
    /// What this broker presents to the others (the cluster secret).
    pub(super) peer_authorize: std::sync::OnceLock<strata_client::Authorize>,
}

impl ClusterView {
    /// An empty view for broker `me`.
    pub fn new(me: BrokerId, config: ClusterConfig) -> Self {
        Self {
            me,
            config,
            state: RwLock::new(ViewState::default()),
            incarnation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            round: Notify::new(),
            released: Notify::new(),
            traffic: Mutex::new(HashMap::new()),
            load: Mutex::new(Load::default()),
            control_rounds: AtomicU64::new(0),
            controlling_term: Mutex::new(None),
            hb_seq: AtomicU64::new(1),
            meter: Mutex::new(None),
            balancer: Mutex::new(Balancer::default()),
            channels: Mutex::new(HashMap::new()),
            peer_options: std::sync::OnceLock::new(),
            peer_authorize: std::sync::OnceLock::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Records the incarnation of the engine put in service.
    pub fn set_incarnation(&self, incarnation: u64) {
        self.incarnation.store(incarnation, Ordering::SeqCst);
    }

    /// The WAL streams the known heartbeats name (dead brokers' last
    /// incarnations included until they are forgotten), and this broker's
    /// own: streams a broker may still write.
    pub fn known_streams(&self) -> Vec<WalStream> {
        let me = WalStream {
            broker: self.me,
            incarnation: strata_storage::keys::Incarnation(self.incarnation.load(Ordering::SeqCst)),
        };
        let st = self.state.read();
        st.members
            .values()
            .map(|m| WalStream {
                broker: BrokerId(m.hb.broker_id),
                incarnation: strata_storage::keys::Incarnation(m.hb.incarnation),
            })
            .chain(std::iter::once(me))
            .collect()
    }

    /// True once this broker started draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Asks for an early round of the cluster loop, and wakes waiting claims.
    pub fn nudge(&self) {
        self.round.notify_one();
        self.released.notify_waiters();
    }

    pub(super) fn alive(&self, m: &Member) -> bool {
        m.changed_at.elapsed() < self.config.heartbeat_timeout
    }

    /// Whether a claim may fence `owner` (see the module docs): yes unless
    /// it is another broker's incarnation that is alive now.
    pub fn may_fence(&self, owner: &WalStream) -> bool {
        if owner.broker == self.me {
            // Our own earlier incarnation: gone, since ours is in service.
            return owner.incarnation.0 != self.incarnation.load(Ordering::SeqCst);
        }
        let id = owner.broker.0;
        {
            let st = self.state.read();
            match st.members.get(&id) {
                Some(m) => return m.hb.incarnation != owner.incarnation.0 || !self.alive(m),
                // Known to have left.
                None if st.gone.contains(&id) => return true,
                None => {}
            }
        }
        // Not known yet (a new broker this view has not listed): look
        // before fencing it; the claim retries after the round.
        self.state.write().wanted.insert(id);
        self.round.notify_one();
        false
    }

    /// The broker `topic`/`partition` is assigned to.
    pub fn owner_of(&self, topic: &str, partition: u32) -> Option<u32> {
        self.state
            .read()
            .assignment
            .as_ref()
            .and_then(|(_, a)| a.owner(topic, partition))
    }

    /// The gRPC address of `broker`, from its heartbeat.
    pub fn address_of(&self, broker: u32) -> Option<String> {
        self.state
            .read()
            .members
            .get(&broker)
            .map(|m| m.hb.address.clone())
    }

    /// Live brokers and their addresses.
    pub fn live_brokers(&self) -> Vec<(u32, String)> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| self.alive(m))
            .map(|m| (m.hb.broker_id, m.hb.address.clone()))
            .collect()
    }

    /// The Kafka listener address (`host:port`) of `broker`, from its
    /// heartbeat.
    pub fn kafka_address_of(&self, broker: u32) -> Option<String> {
        self.state
            .read()
            .members
            .get(&broker)
            .map(|m| m.hb.kafka_address.clone())
            .filter(|a| !a.is_empty())
    }

    /// Live brokers and their Kafka listener addresses (`host:port`).
    pub fn live_kafka_brokers(&self) -> Vec<(u32, String)> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| self.alive(m))
            .map(|m| (m.hb.broker_id, m.hb.kafka_address.clone()))
            .collect()
    }

    /// The controller's broker id, as this broker last read the term
    /// chain.
    pub fn controller_id(&self) -> Option<u32> {
        self.state
            .read()
            .controller
            .as_ref()
            .map(|(_, term)| term.broker_id)
    }

    /// Live brokers other than this one whose last heartbeat lists a
    /// partition of `topic` open.
    pub(super) fn brokers_with_open(&self, topic: &str) -> Vec<u32> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| m.hb.broker_id != self.me.0 && self.alive(m))
            .filter(|m| m.hb.partitions.iter().any(|p| p.topic == topic))
            .map(|m| m.hb.broker_id)
            .collect()
    }

    /// Live, non-draining brokers other than this one.
    pub fn eligible_others(&self) -> Vec<u32> {
        let st = self.state.read();
        st.members
            .values()
            .filter(|m| m.hb.broker_id != self.me.0 && self.alive(m) && !m.hb.draining)
            .map(|m| m.hb.broker_id)
            .collect()
    }

    /// The assignment in force, if one was read.
    pub fn assignment(&self) -> Option<(Version, Arc<Assignment>)> {
        self.state.read().assignment.clone()
    }

    /// True while this broker holds the controller term.
    pub fn is_controller(&self) -> bool {
        let st = self.state.read();
        st.controller.as_ref().is_some_and(|(_, c)| {
            c.broker_id == self.me.0 && c.incarnation == self.incarnation.load(Ordering::SeqCst)
        })
    }

    /// Fails with `NOT_OWNER` unless `tp` is assigned to this broker.
    pub fn check_owner(&self, tp: &TopicPartition) -> Result<()> {
        let st = self.state.read();
        let Some((_, a)) = &st.assignment else {
            return Err(BrokerError::NotOwner {
                tp: tp.to_string(),
                owner: None,
                detail: "this broker is joining the cluster and has not read the partition assignment yet; retry shortly".into(),
            });
        };
        match a.owner(tp.topic.as_str(), tp.partition) {
            Some(b) if b == self.me.0 => Ok(()),
            Some(b) => Err(BrokerError::NotOwner {
                tp: tp.to_string(),
                owner: st.members.get(&b).map(|m| (b, m.hb.address.clone())),
                detail: format!("it is assigned to broker {b}; send requests there"),
            }),
            None => Err(BrokerError::NotOwner {
                tp: tp.to_string(),
                owner: None,
                detail: "no broker is assigned to it yet (the controller assigns new partitions within a heartbeat interval); retry shortly".into(),
            }),
        }
    }

    /// True when a member's heartbeat names a newer chain version (read by
    /// `field`) than `known`.
    pub(super) fn newer_hint(
        &self,
        known: Option<Version>,
        field: impl Fn(&Heartbeat) -> Option<u64>,
    ) -> bool {
        let st = self.state.read();
        st.members
            .values()
            .filter_map(|m| field(&m.hb))
            .any(|v| known.is_none_or(|k| v > k.0))
    }

    /// The cluster status for `strata cluster status`.
    pub fn status(&self) -> ClusterStatus {
        let st = self.state.read();
        let controller = st
            .controller
            .as_ref()
            .filter(|(_, c)| {
                st.members
                    .get(&c.broker_id)
                    .is_some_and(|m| m.hb.incarnation == c.incarnation && self.alive(m))
            })
            .map(|(_, c)| c.broker_id);
        let brokers = st
            .members
            .values()
            .map(|m| BrokerStatus {
                broker_id: m.hb.broker_id,
                address: m.hb.address.clone(),
                http_address: m.hb.http_address.clone(),
                incarnation: m.hb.incarnation,
                alive: self.alive(m),
                draining: m.hb.draining,
                controller: controller == Some(m.hb.broker_id),
                partitions_owned: u32::try_from(m.hb.partitions.len()).unwrap_or(u32::MAX),
                bytes_in_per_sec: m.hb.load.bytes_in_per_sec,
                bytes_out_per_sec: m.hb.load.bytes_out_per_sec,
                cpu_cores: m.hb.load.cpu_cores,
                heartbeat_age_ms: u64::try_from(m.changed_at.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        let rates = partition_rates(&st.members);
        let partitions = st
            .assignment
            .as_ref()
            .map(|(_, a)| {
                a.topics
                    .iter()
                    .flat_map(|(t, slots)| {
                        let rates = &rates;
                        slots.iter().enumerate().map(move |(p, s)| {
                            let r = rates
                                .get(&(t.clone(), p as u32))
                                .copied()
                                .unwrap_or_default();
                            PartitionAssignment {
                                topic: t.clone(),
                                partition: p as u32,
                                broker_id: s.broker,
                                pinned: s.pinned,
                                bytes_in_per_sec: r.bytes_in_per_sec,
                                bytes_out_per_sec: r.bytes_out_per_sec,
                            }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterStatus {
            broker_id: self.me.0,
            controller_id: controller,
            controller_term: st.controller.as_ref().map_or(0, |(v, _)| v.0),
            assignment_version: st.assignment.as_ref().map_or(0, |(v, _)| v.0),
            brokers,
            partitions,
        }
    }
}

/// Traffic per partition, from the owners' heartbeats.
pub(super) fn partition_rates(members: &BTreeMap<u32, Member>) -> HashMap<(String, u32), Traffic> {
    members
        .values()
        .flat_map(|m| m.hb.partitions.iter())
        .map(|p| ((p.topic.clone(), p.partition), p.traffic()))
        .collect()
}

#[cfg(test)]
mod tests {
    use strata_storage::keys;

    use super::*;
    use crate::cluster::membership::Heartbeats;
    use crate::cluster::membership::tests::hb;

    fn stream(broker: u32, incarnation: u64) -> WalStream {
        WalStream {
            broker: BrokerId(broker),
            incarnation: keys::Incarnation(incarnation),
        }
    }

    /// A manifest may name a broker this view has not listed yet (hinted
    /// rounds read known members only): never fence it before looking.
    #[test]
    fn an_unknown_owner_is_looked_up_before_it_is_fenced() {
        let view = ClusterView::new(BrokerId(1), ClusterConfig::default());
        view.update_members(Heartbeats {
            read: vec![hb(1, 1)],
            ..Heartbeats::default()
        });
        assert!(!view.may_fence(&stream(5, 1)), "unknown: look first");
        assert!(!view.may_fence(&stream(6, 1)));
        let wanted: Vec<u32> = view.state.read().wanted.iter().copied().collect();
        assert_eq!(wanted, [5, 6]);
        // The next round asks for them: 5 is alive, 6 is gone.
        view.update_members(Heartbeats {
            asked_for: wanted,
            read: vec![hb(1, 2), hb(5, 1)],
            unread: Vec::new(),
        });
        assert!(!view.may_fence(&stream(5, 1)), "alive");
        assert!(view.may_fence(&stream(5, 0)), "an older incarnation");
        assert!(view.may_fence(&stream(6, 1)), "its heartbeat is gone");
        assert!(view.state.read().wanted.is_empty());
        // A gone broker that comes back is a member again.
        view.update_members(Heartbeats {
            read: vec![hb(1, 3), hb(5, 2), hb(6, 1)],
            ..Heartbeats::default()
        });
        assert!(!view.state.read().gone.contains(&6));
        assert!(!view.may_fence(&stream(6, 1)));
    }

    #[test]
    fn heartbeats_hint_at_newer_chain_versions() {
        let view = ClusterView::new(BrokerId(1), ClusterConfig::default());
        view.update_members(Heartbeats {
            read: vec![hb(1, 1), hb(3, 1)],
            ..Heartbeats::default()
        });
        let assignment = |h: &Heartbeat| h.assignment_version;
        assert!(view.newer_hint(None, assignment));
        assert!(view.newer_hint(Some(Version(2)), assignment));
        assert!(!view.newer_hint(Some(Version(3)), assignment));
        assert!(!view.newer_hint(Some(Version(1)), |h| h.controller_term));
    }
}
