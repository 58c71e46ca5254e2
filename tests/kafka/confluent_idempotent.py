"""confluent-kafka (librdkafka) idempotent producer: sends COUNT keyed
records to TOPIC with enable.idempotence and acks=all, and appends one JSON
line per delivery report to ACKS_FILE: {"p": partition, "o": offset, "i":
i} for an ack, {"i": i, "error": "..."} for a failure. The broker may be
killed and restarted meanwhile; librdkafka retries with the same sequence
numbers.

Usage: confluent_idempotent.py BOOTSTRAP TOPIC COUNT ACKS_FILE
"""
import json
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, count, acks_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = open(acks_file, "w", buffering=1)


def report(err, msg):
    i = int(msg.value().decode().split("-")[1])
    if err is not None:
        out.write(json.dumps({"i": i, "error": str(err)}) + "\n")
    else:
        out.write(json.dumps({"p": msg.partition(), "o": msg.offset(), "i": i}) + "\n")


p = Producer(
    {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        "reconnect.backoff.max.ms": 500,
    }
)
for i in range(count):
    while True:
        try:
            p.produce(topic, key=b"key-%d" % (i % 16), value=b"v-%d" % i, on_delivery=report)
            break
        except BufferError:
            p.poll(0.1)
    p.poll(0)
    # Spread the run over a few seconds, so faults land mid-stream.
    if i % 100 == 99:
        time.sleep(0.05)
left = p.flush(150)
out.write(json.dumps({"done": True, "unflushed": left}) + "\n")
