"""Describes consumer group GROUP with confluent-kafka's AdminClient
(librdkafka: ConsumerGroupDescribe for a consumer-protocol group) and
prints one JSON object: {"state": ..., "type": ..., "assignor": ...,
"members": [{"client_id": ..., "partitions": [[topic, partition], ...]}]}.

Usage: confluent_describe_group.py BOOTSTRAP GROUP
"""
import json
import sys

from confluent_kafka.admin import AdminClient

bootstrap, group = sys.argv[1:3]
admin = AdminClient({"bootstrap.servers": bootstrap})
described = admin.describe_consumer_groups([group])[group].result(timeout=30)
print(
    json.dumps(
        {
            "state": str(described.state),
            "type": str(getattr(described, "type", "")),
            "assignor": described.partition_assignor,
            "members": [
                {
                    "client_id": m.client_id,
                    "partitions": [
                        [tp.topic, tp.partition] for tp in m.assignment.topic_partitions
                    ],
                }
                for m in described.members
            ],
        }
    )
)
