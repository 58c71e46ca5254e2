"""kafka-python's admin client against a Strata broker: create a topic with
settings, describe its configs, change them (AlterConfigs), list it, delete
it. Prints one JSON object.

Usage: kafka_python_admin.py BOOTSTRAP TOPIC
"""
import json
import sys
import time

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import InvalidConfigurationError, TopicAlreadyExistsError

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
out = {}
admin.create_topics(
    [NewTopic(topic, num_partitions=3, replication_factor=1, topic_configs={"retention.ms": "3600000"})]
)
try:
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    out["duplicate"] = "accepted"
except TopicAlreadyExistsError:
    out["duplicate"] = "TopicAlreadyExistsError"
try:
    admin.create_topics([NewTopic(topic + "-bad", 1, 1, topic_configs={"compression.type": "gzip"})])
    out["bad_config"] = "accepted"
except InvalidConfigurationError as e:
    out["bad_config"] = "InvalidConfigurationError"
out["listed"] = topic in admin.list_topics()
res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
# {resource_type: {resource_name: {key: {"value": ..., ...}}}}
configs = {}
for by_name in res.values():
    for entries in by_name.values():
        for key, entry in entries.items():
            configs[key] = entry["value"] if isinstance(entry, dict) else entry
out["configs"] = configs


def describe():
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    found = {}
    for by_name in res.values():
        for entries in by_name.values():
            for key, entry in entries.items():
                found[key] = entry["value"] if isinstance(entry, dict) else entry
    return found


def keys(found):
    return {k: found.get(k) for k in ("segment.ms", "retention.ms")}


# kafka-python picks IncrementalAlterConfigs: the other settings stay.
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"segment.ms": "60000"})])
out["altered"] = keys(describe())
# A reset is a DELETE: back to the broker default.
admin.reset_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=["retention.ms"])])
out["reset"] = keys(describe())
# The older AlterConfigs (whole set; the client sends the other changed
# settings along, as it must).
admin.alter_configs(
    [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "7200000"})],
    incremental=False,
)
out["altered_whole"] = keys(describe())
admin.delete_topics([topic])
time.sleep(0.5)
out["listed_after_delete"] = topic in admin.list_topics()
admin.close()
print(json.dumps(out))
