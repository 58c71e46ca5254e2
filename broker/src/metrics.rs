//! The broker's metrics and their Prometheus text exposition (hand-written:
//! a few counters do not need a metrics library).
//!
//! | metric | type | labels | source |
//! |---|---|---|---|
//! | `strata_broker_info` | gauge (1) | `broker_id`, `version` | config |
//! | `strata_store_requests_total` | counter | `op` = put, multipart, get, head, list, delete, copy, rename | engine store stats |
//! | `strata_store_errors_total` | counter | `op` (as above) | engine store stats |
//! | `strata_store_bytes_total` | counter | `op` = put (written), get (read) | engine store stats |
//! | `strata_produce_requests_total` | counter | | produce service |
//! | `strata_produce_records_total` | counter | | records appended (not duplicates) |
//! | `strata_produce_bytes_total` | counter | | batch bytes appended |
//! | `strata_produce_errors_total` | counter | `reason` (an `ErrorReason` name) | produce service |
//! | `strata_produce_ack_seconds` | histogram | | from a batch's arrival to its acknowledgement (acks=all: durable in the bucket), both front ends |
//! | `strata_fetch_requests_total` | counter | | fetch streams opened |
//! | `strata_fetch_bytes_total` | counter | | batch bytes sent to consumers |
//! | `strata_kafka_connections` | gauge | | open Kafka-protocol connections |
//! | `strata_kafka_requests_total` | counter | `api` (Kafka's API name) | Kafka listener |
//! | `strata_kafka_rejected_frames_total` | counter | | Kafka frames refused (too large, malformed, unsupported); each closed its connection |
//! | `strata_auth_enabled` | gauge | | 1 when clients must authenticate (`auth.enabled`) |
//! | `strata_exposed_without_auth` | gauge | | 1 when a listener is bound beyond loopback with authentication off |
//! | `strata_auth_failures_total` | counter | | logins refused (wrong or missing credentials) |
//! | `strata_auth_denied_total` | counter | | requests (or parts of them) an ACL refused |
//! | `strata_partitions_owned` | gauge | | partition registry |
//! | `strata_hot_tier_hits_total` | counter | | hot tier block hits |
//! | `strata_hot_tier_misses_total` | counter | | hot tier block misses |
//! | `process_cpu_seconds_total` | counter | | `/proc/self/stat` (0 if unavailable) |
//! | `strata_bytes_in_per_second` | gauge | | produce bytes/s over the last heartbeat interval (autoscaling signal) |
//! | `strata_bytes_out_per_second` | gauge | | fetch bytes/s over the last heartbeat interval |
//! | `strata_cpu_cores` | gauge | | CPU cores used over the last heartbeat interval |
//! | `strata_draining` | gauge | | 1 while the broker drains before exiting |
//! | `strata_controller` | gauge | | 1 on the broker holding the controller term |
//! | `strata_cluster_brokers_alive` | gauge | | live brokers in this broker's view |
//! | `strata_wal_objects_total` | counter | | WAL objects this broker's current WAL writer wrote |
//! | `strata_wal_bytes_total` | counter | | record bytes in them (`bytes / objects` against `wal.max_bytes`: how full objects are; a full one holds it and part of a batch) |
//! | `strata_wal_hedged_puts_total` | counter | | WAL PUTs sent again because the first was slow (`wal.hedge`) |
//! | `strata_unsealed_bytes` | gauge | | bytes of unsealed tails held in memory (budget: `wal.max_unsealed_bytes`) |
//! | `strata_bucket_objects` | gauge | `kind` = wal, wal_tombstone, segment, manifest, topic_config, cluster, other | the controller's last bucket sweep (absent elsewhere and before the first) |
//! | `strata_bucket_bytes` | gauge | `kind` (as above) | the controller's last bucket sweep |
//! | `strata_gc_deleted_objects_total` | counter | `kind` (as above) | objects this broker's sweeps deleted |
//! | `strata_gc_deleted_bytes_total` | counter | `kind` (as above) | bytes this broker's sweeps deleted |
//!
//! `strata bench` scrapes these names: renaming one breaks it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use strata_storage::gc::Inventory;
use strata_storage::hot_tier::HotTierStats;
use strata_storage::store::StatsSnapshot;

/// Counters updated by the services.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// Produce requests received.
    pub produce_requests: AtomicU64,
    /// Records appended.
    pub produce_records: AtomicU64,
    /// Batch bytes appended.
    pub produce_bytes: AtomicU64,
    produce_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// From a batch's arrival to its acknowledgement.
    pub produce_ack: Histogram,
    /// Fetch streams opened.
    pub fetch_requests: AtomicU64,
    /// Batch bytes sent by fetches.
    pub fetch_bytes: AtomicU64,
    /// Open Kafka-protocol connections.
    pub kafka_connections: AtomicU64,
    /// Kafka frames refused.
    pub kafka_rejected_frames: AtomicU64,
    kafka_requests: Mutex<BTreeMap<&'static str, u64>>,
    /// 1 when a listener is bound beyond loopback with authentication off.
    pub exposed_without_auth: AtomicU64,
    /// Logins refused.
    pub auth_failures: AtomicU64,
    /// Requests (or parts of them) an ACL refused.
    pub auth_denied: AtomicU64,
}

/// Upper bounds (seconds) of the latency histograms' buckets: from a
/// memory store's sub-millisecond acks to an object store's slow tail.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`] (lock-free: one atomic
/// add per bucket the observation falls in, plus the sum and count).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound (not yet cumulative).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus's cumulative exposition under `name`.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything else a scrape shows, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Broker id.
    pub broker_id: u32,
    /// Open partitions.
    pub partitions_owned: usize,
    /// Store counters.
    pub store: StatsSnapshot,
    /// Hot tier counters.
    pub hot_tier: HotTierStats,
    /// Produce bytes/s, fetch bytes/s, CPU cores (last heartbeat interval).
    pub load: crate::cluster::model::Load,
    /// Draining before exit.
    pub draining: bool,
    /// Holds the controller term.
    pub controller: bool,
    /// Live brokers seen.
    pub brokers_alive: usize,
    /// Bytes of unsealed tails held in memory.
    pub unsealed_bytes: u64,
    /// WAL objects written, and the record bytes in them.
    pub wal_objects: u64,
    /// See `wal_objects`.
    pub wal_bytes: u64,
    /// WAL PUTs sent again because the first was slow (`wal.hedge`).
    pub wal_hedged_puts: u64,
    /// What the bucket held at this broker's last sweep (controller only).
    pub bucket: Option<Inventory>,
    /// What this broker's sweeps deleted.
    pub gc_deleted: Inventory,
    /// The groups this broker coordinates.
    pub groups: Vec<crate::groups::GroupGauges>,
    /// `auth.enabled`.
    pub auth_enabled: bool,
}

impl BrokerMetrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a failed produce by its reason name.
    pub fn produce_error(&self, reason: &'static str) {
        *self.produce_errors.lock().entry(reason).or_insert(0) += 1;
    }

    /// Counts a Kafka request by its API's name.
    pub fn kafka_request(&self, api: &'static str) {
        *self.kafka_requests.lock().entry(api).or_insert(0) += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let s = &g.store;
        header(&mut out, "strata_broker_info", "gauge", "Broker identity.");
        let _ = writeln!(
            out,
            "strata_broker_info{{broker_id=\"{}\",version=\"{}\"}} 1",
            g.broker_id,
            env!("CARGO_PKG_VERSION")
        );
        let ops = [
            ("put", s.put_requests, s.put_errors),
            ("multipart", s.multipart_requests, s.multipart_errors),
            ("get", s.get_requests, s.get_errors),
            ("head", s.head_requests, s.head_errors),
            ("list", s.list_requests, s.list_errors),
            ("delete", s.delete_requests, s.delete_errors),
            ("copy", s.copy_requests, s.copy_errors),
            ("rename", s.rename_requests, s.rename_errors),
        ];
        header(
            &mut out,
            "strata_store_requests_total",
            "counter",
            "Object store requests, by operation (what the bucket bills).",
        );
        for (op, n, _) in ops {
            let _ = writeln!(out, "strata_store_requests_total{{op=\"{op}\"}} {n}");
        }
        header(
            &mut out,
            "strata_store_errors_total",
            "counter",
            "Failed object store requests, by operation.",
        );
        for (op, _, n) in ops {
            let _ = writeln!(out, "strata_store_errors_total{{op=\"{op}\"}} {n}");
        }
        header(
            &mut out,
            "strata_store_bytes_total",
            "counter",
            "Object store payload bytes: put = written, get = read.",
        );
        let _ = writeln!(
            out,
            "strata_store_bytes_total{{op=\"put\"}} {}",
            s.bytes_written
        );
        let _ = writeln!(
            out,
            "strata_store_bytes_total{{op=\"get\"}} {}",
            s.bytes_read
        );

        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "strata_produce_requests_total",
            "Produce requests received.",
            load(&self.produce_requests),
        );
        counter(
            &mut out,
            "strata_produce_records_total",
            "Records appended.",
            load(&self.produce_records),
        );
        counter(
            &mut out,
            "strata_produce_bytes_total",
            "Batch bytes appended.",
            load(&self.produce_bytes),
        );
        header(
            &mut out,
            "strata_produce_errors_total",
            "counter",
            "Failed produce requests, by error reason.",
        );
        for (reason, n) in self.produce_errors.lock().iter() {
            let _ = writeln!(
                out,
                "strata_produce_errors_total{{reason=\"{reason}\"}} {n}"
            );
        }
        self.produce_ack.render(
            &mut out,
            "strata_produce_ack_seconds",
            "Time from a produce batch's arrival to its acknowledgement (acks=all: durable in the bucket).",
        );
        counter(
            &mut out,
            "strata_fetch_requests_total",
            "Fetch streams opened.",
            load(&self.fetch_requests),
        );
        counter(
            &mut out,
            "strata_fetch_bytes_total",
            "Batch bytes sent to consumers.",
            load(&self.fetch_bytes),
        );
        header(
            &mut out,
            "strata_kafka_connections",
            "gauge",
            "Open Kafka-protocol connections.",
        );
        let _ = writeln!(
            out,
            "strata_kafka_connections {}",
            load(&self.kafka_connections)
        );
        header(
            &mut out,
            "strata_kafka_requests_total",
            "counter",
            "Kafka-protocol requests, by API.",
        );
        for (api, n) in self.kafka_requests.lock().iter() {
            let _ = writeln!(out, "strata_kafka_requests_total{{api=\"{api}\"}} {n}");
        }
        counter(
            &mut out,
            "strata_kafka_rejected_frames_total",
            "Kafka frames refused (too large, malformed, unsupported); each closed its connection.",
            load(&self.kafka_rejected_frames),
        );
        header(
            &mut out,
            "strata_auth_enabled",
            "gauge",
            "1 when clients must authenticate (auth.enabled).",
        );
        let _ = writeln!(out, "strata_auth_enabled {}", u8::from(g.auth_enabled));
        header(
            &mut out,
            "strata_exposed_without_auth",
            "gauge",
            "1 when a listener is bound beyond loopback with authentication off.",
        );
        let _ = writeln!(
            out,
            "strata_exposed_without_auth {}",
            load(&self.exposed_without_auth)
        );
        counter(
            &mut out,
            "strata_auth_failures_total",
            "Logins refused (wrong or missing credentials).",
            load(&self.auth_failures),
        );
        counter(
            &mut out,
            "strata_auth_denied_total",
            "Requests (or parts of them) an ACL refused.",
            load(&self.auth_denied),
        );
        header(
            &mut out,
            "strata_partitions_owned",
            "gauge",
            "Partitions this broker serves.",
        );
        let _ = writeln!(out, "strata_partitions_owned {}", g.partitions_owned);
        counter(
            &mut out,
            "strata_wal_objects_total",
            "WAL objects written by this broker's current WAL writer.",
            g.wal_objects,
        );
        counter(
            &mut out,
            "strata_wal_bytes_total",
            "Record bytes in those WAL objects (divided by the objects: how full they are against wal.max_bytes).",
            g.wal_bytes,
        );
        counter(
            &mut out,
            "strata_wal_hedged_puts_total",
            "WAL PUTs sent a second time because the first was slow (wal.hedge): the share of PUTs it adds.",
            g.wal_hedged_puts,
        );
        counter(
            &mut out,
            "strata_hot_tier_hits_total",
            "Hot tier block hits.",
            g.hot_tier.hits,
        );
        counter(
            &mut out,
            "strata_hot_tier_misses_total",
            "Hot tier block misses (each a ranged GET).",
            g.hot_tier.misses,
        );
        header(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the broker process.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", process_cpu_seconds());
        let gauges = [
            (
                "strata_bytes_in_per_second",
                "Produce bytes per second accepted (last heartbeat interval).",
                g.load.bytes_in_per_sec,
            ),
            (
                "strata_bytes_out_per_second",
                "Fetch bytes per second served (last heartbeat interval).",
                g.load.bytes_out_per_sec,
            ),
            (
                "strata_cpu_cores",
                "CPU cores used by the broker (last heartbeat interval).",
                g.load.cpu_cores,
            ),
            (
                "strata_draining",
                "1 while the broker moves its partitions away before exiting.",
                f64::from(u8::from(g.draining)),
            ),
            (
                "strata_controller",
                "1 on the broker holding the controller term.",
                f64::from(u8::from(g.controller)),
            ),
            (
                "strata_unsealed_bytes",
                "Bytes of unsealed partition tails held in memory (budget: wal.max_unsealed_bytes).",
                g.unsealed_bytes as f64,
            ),
            (
                "strata_cluster_brokers_alive",
                "Live brokers in this broker's view of the cluster.",
                g.brokers_alive as f64,
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        if let Some(bucket) = &g.bucket {
            by_kind(
                &mut out,
                ("strata_bucket_objects", "gauge"),
                "Objects in the bucket by kind, at the controller's last sweep.",
                bucket,
                |c| c.objects,
            );
            by_kind(
                &mut out,
                ("strata_bucket_bytes", "gauge"),
                "Bytes in the bucket by kind, at the controller's last sweep.",
                bucket,
                |c| c.bytes,
            );
        }
        by_kind(
            &mut out,
            ("strata_gc_deleted_objects_total", "counter"),
            "Objects deleted by this broker's bucket sweeps, by kind.",
            &g.gc_deleted,
            |c| c.objects,
        );
        by_kind(
            &mut out,
            ("strata_gc_deleted_bytes_total", "counter"),
            "Bytes deleted by this broker's bucket sweeps, by kind.",
            &g.gc_deleted,
            |c| c.bytes,
        );
        render_groups(&mut out, &g.groups);
        out
    }
}

/// The per-group series of the groups this broker coordinates.
fn render_groups(out: &mut String, groups: &[crate::groups::GroupGauges]) {
    // (name, kind, help, value per group)
    type PerGroup = fn(&crate::groups::GroupGauges) -> u64;
    let per_group: [(&str, &str, &str, PerGroup); 2] = [
        (
            "strata_group_members",
            "gauge",
            "Members of each group this broker coordinates.",
            |g| g.members as u64,
        ),
        (
            "strata_group_rebalances_total",
            "counter",
            "Assignment changes of each group since this broker became its coordinator.",
            |g| g.rebalances,
        ),
    ];
    for (name, kind, help, value) in per_group {
        header(out, name, kind, help);
        for g in groups {
            let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", escape(&g.group), value(g));
        }
    }
    // (name, help, value per committed offset and partition end)
    type PerPartition = fn(i64, Option<i64>) -> Option<i64>;
    let per_partition: [(&str, &str, PerPartition); 2] = [
        (
            "strata_group_committed_offset",
            "The committed offset of each group and partition.",
            |offset, _| Some(offset),
        ),
        (
            "strata_group_lag",
            "Records between the committed offset and the end of the partition (high watermark), per group and partition.",
            |offset, end| end.map(|e| (e - offset).max(0)),
        ),
    ];
    for (name, help, value) in per_partition {
        header(out, name, "gauge", help);
        for g in groups {
            for (t, p, offset, end) in &g.offsets {
                if let Some(v) = value(*offset, *end) {
                    let _ = writeln!(
                        out,
                        "{name}{{group=\"{}\",topic=\"{t}\",partition=\"{p}\"}} {v}",
                        escape(&g.group)
                    );
                }
            }
        }
    }
}

/// A Prometheus label value: backslashes and quotes escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn by_kind(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    inventory: &Inventory,
    value: impl Fn(strata_storage::gc::Count) -> u64,
) {
    header(out, name, kind, help);
    for (label, count) in inventory.kinds() {
        let _ = writeln!(out, "{name}{{kind=\"{label}\"}} {}", value(count));
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// User + system CPU seconds of this process, from `/proc/self/stat`
/// (assuming the usual 100 clock ticks per second); 0 where unavailable.
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after its closing
    // parenthesis start at field 3 (state). utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_required_names() {
        let m = BrokerMetrics::default();
        BrokerMetrics::add(&m.produce_requests, 2);
        m.produce_error("INVALID_BATCH");
        let text = m.render(&Gauges {
            broker_id: 7,
            bucket: Some(Inventory::default()),
            groups: vec![crate::groups::GroupGauges {
                group: "billing \"eu\"".into(),
                members: 2,
                rebalances: 3,
                offsets: vec![
                    ("orders".into(), 1, 5, Some(9)),
                    ("orders".into(), 2, 7, None),
                ],
            }],
            ..Gauges::default()
        });
        for needle in [
            "strata_broker_info{broker_id=\"7\",version=\"",
            "strata_store_requests_total{op=\"put\"} 0",
            "strata_store_requests_total{op=\"list\"} 0",
            "strata_store_bytes_total{op=\"get\"} 0",
            "strata_store_errors_total{op=\"delete\"} 0",
            "strata_produce_requests_total 2",
            "strata_produce_records_total 0",
            "strata_produce_bytes_total 0",
            "strata_produce_errors_total{reason=\"INVALID_BATCH\"} 1",
            "strata_fetch_bytes_total 0",
            "strata_partitions_owned 0",
            "strata_hot_tier_hits_total 0",
            "strata_hot_tier_misses_total 0",
            "process_cpu_seconds_total ",
            "strata_bucket_objects{kind=\"wal\"} 0",
            "strata_bucket_bytes{kind=\"segment\"} 0",
            "strata_gc_deleted_objects_total{kind=\"wal_tombstone\"} 0",
            "strata_group_members{group=\"billing \\\"eu\\\"\"} 2",
            "strata_group_rebalances_total{group=\"billing \\\"eu\\\"\"} 3",
            "strata_group_committed_offset{group=\"billing \\\"eu\\\"\",topic=\"orders\",partition=\"2\"} 7",
            "strata_group_lag{group=\"billing \\\"eu\\\"\",topic=\"orders\",partition=\"1\"} 4",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn the_ack_histogram_is_cumulative() {
        let m = BrokerMetrics::default();
        for ms in [0, 3, 3, 40, 40, 40, 20_000] {
            m.produce_ack.observe(Duration::from_millis(ms));
        }
        let text = m.render(&Gauges::default());
        for needle in [
            "# TYPE strata_produce_ack_seconds histogram",
            "strata_produce_ack_seconds_bucket{le=\"0.001\"} 1\n",
            "strata_produce_ack_seconds_bucket{le=\"0.0025\"} 1\n",
            "strata_produce_ack_seconds_bucket{le=\"0.005\"} 3\n",
            "strata_produce_ack_seconds_bucket{le=\"0.05\"} 6\n",
            "strata_produce_ack_seconds_bucket{le=\"10\"} 6\n",
            "strata_produce_ack_seconds_bucket{le=\"+Inf\"} 7\n",
            "strata_produce_ack_seconds_sum 20.126\n",
            "strata_produce_ack_seconds_count 7\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    /// Every metric the Grafana dashboard plots is one the broker exports.
    #[test]
    fn the_dashboard_plots_exported_metrics() {
        let dashboard = include_str!("../../deploy/grafana/dashboards/strata.json");
        let text = BrokerMetrics::default().render(&Gauges {
            bucket: Some(Inventory::default()),
            ..Gauges::default()
        });
        let mut names = std::collections::BTreeSet::new();
        let mut rest = dashboard;
        while let Some(i) = rest.find("strata_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(&tail[..end]);
            rest = &tail[end..];
        }
        assert!(names.len() > 10, "{names:?}");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            // Group metrics appear only with groups; they are checked in
            // renders_the_required_names.
            if base.starts_with("strata_group_") {
                continue;
            }
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the dashboard plots {name}, which the broker does not export"
            );
        }
    }

    #[test]
    fn parses_proc_stat() {
        let stat = "1 (my (odd) cmd) S 0 1 1 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
