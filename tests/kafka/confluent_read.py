"""Reads every partition of TOPIC from offset 0 with confluent-kafka
(assign, no group) until idle; prints one JSON line per record:
{"p": partition, "o": offset, "k": key, "v": value}.

Usage: confluent_read.py BOOTSTRAP TOPIC PARTITIONS
"""
import json
import sys

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
idle = 0
while idle < 3:
    m = c.poll(1.0)
    if m is None:
        idle += 1
        continue
    if m.error():
        print(json.dumps({"error": str(m.error())}), flush=True)
        continue
    idle = 0
    print(json.dumps({"p": m.partition(), "o": m.offset(), "k": m.key().decode(), "v": m.value().decode()}))
c.close()
