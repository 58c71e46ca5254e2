"""One member of a consumer group (confluent-kafka / librdkafka; PROTOCOL
is `classic` (the default: JoinGroup/SyncGroup, eager rebalances) or
`consumer` (KIP-848's ConsumerGroupHeartbeat, incremental hand-overs)):
subscribes to TOPIC in GROUP (a TOPIC starting with `^` is a regular
expression: every topic whose name matches), appends one JSON line per
record to OUT_FILE ({"m": NAME, "t": topic, "p": partition, "o": offset,
"v": value}) and per assignment change ({"m": NAME, "assigned": [...]} /
{"m": NAME, "revoked": [...]}), commits synchronously after every 50
records, and on SIGTERM commits, leaves the group and exits 0.

ASSIGNOR, for the consumer protocol, is the server-side assignor to ask
for (`group.remote.assignor`).

Usage: confluent_member.py BOOTSTRAP TOPIC GROUP NAME OUT_FILE [PROTOCOL [ASSIGNOR]]
"""
import json
import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException

bootstrap, topic, group, name, out_path = sys.argv[1:6]
protocol = sys.argv[6] if len(sys.argv) > 6 else "classic"
assignor = sys.argv[7] if len(sys.argv) > 7 else None
out = open(out_path, "a", buffering=1)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def on_assign(consumer, partitions):
    out.write(json.dumps({"m": name, "assigned": [p.partition for p in partitions]}) + "\n")


def on_revoke(consumer, partitions):
    # Commit what was processed before the partitions move.
    try:
        consumer.commit(asynchronous=False)
    except KafkaException:
        pass
    out.write(json.dumps({"m": name, "revoked": [p.partition for p in partitions]}) + "\n")


def commit(consumer):
    """A synchronous commit; "no offset stored" (nothing consumed since the
    last commit, e.g. right after a rebalance) is not an error."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as e:
        if e.args[0].code() != KafkaError._NO_OFFSET:
            out.write(json.dumps({"m": name, "commit_error": str(e)}) + "\n")


config = {
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "client.id": name,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "group.protocol": protocol,
}
if assignor:
    config["group.remote.assignor"] = assignor
if protocol == "classic":
    # The consumer protocol takes both from the coordinator.
    config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
c = Consumer(config)
c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
since_commit = 0
while not stop:
    m = c.poll(0.2)
    if m is None:
        continue
    if m.error():
        out.write(json.dumps({"m": name, "error": str(m.error())}) + "\n")
        continue
    out.write(json.dumps({"m": name, "t": m.topic(), "p": m.partition(), "o": m.offset(),
                          "v": m.value().decode()}) + "\n")
    since_commit += 1
    if since_commit >= 50:
        commit(c)
        since_commit = 0
commit(c)
c.close()
out.write(json.dumps({"m": name, "closed": True}) + "\n")
