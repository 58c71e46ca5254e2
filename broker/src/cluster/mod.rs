//! Several brokers sharing one bucket behave as one cluster (DESIGN §6, §8).
//!
//! Everything goes through the bucket; brokers only talk to each other for
//! hints ([`Nudge`](strata_proto::v1::NudgeRequest): "look now") and to
//! forward an operator's drain.
//!
//! - **Membership**: every broker overwrites `cluster/brokers/{id}/heartbeat.json`
//!   every `cluster.heartbeat_interval` ([`model::Heartbeat`]: address,
//!   incarnation, draining, owned partitions, load). A reader judges a
//!   heartbeat alive if it saw it *change* within `cluster.heartbeat_timeout`
//!   on its own monotonic clock: no clock comparison between machines, and
//!   a broker that just started gives everyone the full timeout.
//! - **Controller**: the broker that created the highest
//!   `cluster/controller/{term}` (create-only) while its heartbeat is alive,
//!   with the same incarnation, and not draining. Otherwise any other
//!   broker creates the next term; create-only picks one winner.
//! - **Assignment**: the controller computes [`model::plan`] every round
//!   and, when the placement changed, creates the next
//!   `cluster/assignment/{version}`, then nudges every broker. Brokers follow
//!   the highest version ([`reconcile`](ownership::reconcile)): they release
//!   partitions assigned elsewhere (seal the tail, owner-less manifest, nudge
//!   the new owner) and claim partitions assigned to them.
//! - **Claims never fence a live owner**: a claim asks [`ClusterView::may_fence`]
//!   before fencing the incarnation a manifest names; while that incarnation
//!   is alive the claim waits for its release (a graceful move), and only a
//!   dead or replaced incarnation is fenced (a failure takeover), or a live
//!   one that has not released within `cluster.release_timeout`.
//! - **Zombies**: a broker that was paused longer than the heartbeat
//!   timeout checks whether its WAL stream was fenced meanwhile and, if so,
//!   restarts its storage as a new incarnation at once (it would also find
//!   out at its next WAL write). Either way it never acknowledges anything
//!   after the takeover: its WAL writes fail.
//!
//! - **Cost at idle**: a round GETs the known members' heartbeats and
//!   nothing else. Heartbeats carry the controller term and assignment
//!   version their writer knows, so the chains are read only when someone
//!   names a newer version; every tenth round and every nudged round also
//!   LIST the heartbeats (new brokers) and the chains
//!   ([`Look`](round::Look)). A new broker nudges the others after its
//!   first round.
//!
//! One file per job:
//!
//! - `view.rs`: [`ClusterView`], the cached picture of the members, the
//!   controller term and the assignment; owner and fencing checks, status.
//! - `membership.rs`: writing this broker's heartbeat (traffic rates, pause
//!   checks), reading the others', forgetting dead brokers, leaving.
//! - `controller.rs`: the controller election, reading and publishing the
//!   assignment chain, the controller's planning pass, operator moves.
//! - `ownership.rs`: following the assignment (releases and claims),
//!   draining, waiting for a new topic's partitions to be assigned.
//! - `topic_changes.rs`: announcing topic changes to the other brokers and
//!   applying them to the partitions open here.
//! - `peers.rs`: channels to the other brokers and the nudges sent over them.
//! - `round.rs`: the cluster loop that runs all of the above every round.
//! - `model.rs`: the cluster's documents in the bucket and the balancer.
//! - `broker_id.rs`: the start-up check that no live broker uses this id,
//!   and claiming the lowest free id in the bucket (`broker_id = "auto"`).
//!
//! Correctness never rests on the controller being unique or the views
//! being fresh: ownership is decided by create-only manifest versions and
//! WAL fencing (storage). The cluster layer only decides who *tries*.
//!
//! The one thing not to break: a broker must never fence an incarnation it
//! believes alive unless `release_timeout` passed (that would make a
//! healthy broker restart its storage on every move).

pub mod broker_id;
mod controller;
mod membership;
pub mod model;
mod ownership;
mod peers;
mod round;
mod topic_changes;
mod view;

pub use controller::move_partition;
pub use membership::{leave, write_heartbeat};
pub use ownership::{await_assigned, drain};
pub use round::run;
pub use topic_changes::{announce_topic_change, apply_topic_changes, await_topic_closed};
pub use view::ClusterView;
