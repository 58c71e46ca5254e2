"""kafka-python against a Strata broker: the classic producer loop, then a
consumer reading the topic from the beginning. Prints one JSON object:
{"acked": [[partition, offset, i], ...], "consumed": [[partition, offset,
key, value, timestamp, headers], ...]}.

Usage: kafka_python_roundtrip.py BOOTSTRAP TOPIC COUNT
"""
import json
import sys

from kafka import KafkaConsumer, KafkaProducer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

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
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=5000,
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
consumer.close()
print(json.dumps({"acked": acked, "consumed": consumed}))
