"""kafka-python against a Strata broker: the classic producer loop, then a
consumer in group GROUP reading the topic from the beginning
(auto_offset_reset='earliest') and committing. Prints one JSON object:
{"acked": [[partition, offset, i], ...], "consumed": [[partition, offset,
key, value, timestamp, headers], ...]}.

Usage: kafka_python_roundtrip.py BOOTSTRAP TOPIC COUNT GROUP
"""
import json
import sys

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic, count, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
futures = []
for i in range(count):
    futures.append(
        producer.send(
            topic,
            key=b"k%d" % (i % 5),
            value=b"value-%d" % i,
            headers=[("seq", str(i).encode())],
            timestamp_ms=1_700_000_000_000 + i,
        )
    )
producer.flush(timeout=60)
acked = []
for i, f in enumerate(futures):
    md = f.get(timeout=60)
    acked.append([md.partition, md.offset, i])
producer.close()

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=bootstrap,
    group_id=group,
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=10000,
)
consumed = []
for m in consumer:
    consumed.append(
        [
            m.partition,
            m.offset,
            m.key.decode(),
            m.value.decode(),
            m.timestamp,
            [[k, v.decode()] for k, v in m.headers],
        ]
    )
    if len(consumed) >= count:
        break
consumer.commit()
consumer.close()
print(json.dumps({"acked": acked, "consumed": consumed}))
