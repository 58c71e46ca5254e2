"""confluent-kafka's admin client changes a topic under a running producer:
IncrementalAlterConfigs (SET and DELETE) and CreatePartitions, with
DescribeConfigs to read the result back. A record produced before and one
after switching `message.timestamp.type` to LogAppendTime show that the
open partition took the new setting. Prints one JSON object.

Usage: confluent_alter.py BOOTSTRAP TOPIC
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})
out = {}


def wait(futures):
    return {k: f.result(timeout=30) for k, f in futures.items()}


def error_name(futures):
    try:
        wait(futures)
        return "accepted"
    except KafkaException as e:
        return e.args[0].name()


def describe():
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = wait(admin.describe_configs([res]))[res]
    return {k: {"value": e.value, "default": e.is_default} for k, e in entries.items()}


# A minute ago: CreateTime keeps it, LogAppendTime replaces it. (Recent,
# so that retention does not delete it when the release seals it.)
CREATE_TIME = int(time.time() * 1000) - 60_000
out["create_time"] = CREATE_TIME


def produce(partition, value):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    p.produce(topic, value=value, key=b"k", partition=partition, timestamp=CREATE_TIME)
    if p.flush(30):
        raise SystemExit("a record was not acknowledged within 30 s")


wait(admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]))
produce(0, b"before")

alter = ConfigResource(
    ResourceType.TOPIC,
    topic,
    incremental_configs=[
        ConfigEntry("message.timestamp.type", "LogAppendTime",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
    ],
)
wait(admin.incremental_alter_configs([alter]))
out["after_set"] = describe()
produce(0, b"after")

bad = ConfigResource(
    ResourceType.TOPIC,
    topic,
    incremental_configs=[
        ConfigEntry("segment.bytes", "10", incremental_operation=AlterConfigOpType.SET)
    ],
)
out["bad_value"] = error_name(admin.incremental_alter_configs([bad]))
unknown = ConfigResource(
    ResourceType.TOPIC,
    topic + "-missing",
    incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)
    ],
)
out["unknown_topic"] = error_name(admin.incremental_alter_configs([unknown]))

delete = ConfigResource(
    ResourceType.TOPIC,
    topic,
    incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)
    ],
)
wait(admin.incremental_alter_configs([delete]))
out["after_delete"] = describe()

wait(admin.create_partitions([NewPartitions(topic, 4)]))
out["shrink"] = error_name(admin.create_partitions([NewPartitions(topic, 3)]))
out["partitions"] = len(admin.list_topics(topic, timeout=30).topics[topic].partitions)
produce(3, b"new partition")

c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
c.assign([TopicPartition(topic, p, 0) for p in range(4)])
records = []
deadline = time.time() + 30
while len(records) < 3 and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    ts_type, ts = m.timestamp()
    records.append({"p": m.partition(), "v": m.value().decode(), "ts_type": ts_type, "ts": ts})
c.close()
out["records"] = sorted(records, key=lambda r: (r["p"], r["v"] != "before"))
print(json.dumps(out))
