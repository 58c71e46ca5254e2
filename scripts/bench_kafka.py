"""The Kafka-path workload of scripts/bench-kafka.sh: confluent-kafka
(librdkafka) produces COUNT records of SIZE bytes with 16-byte keys to
TOPIC with acks=all and linger.ms=5, then reads them all back (assign every
partition from offset 0, no group). Prints one JSON object on stdout:

{"produce": {"records", "failed", "seconds", "records_per_sec",
             "mib_per_sec", "latency_ms": {"p50", "p99", "p999", "max"}},
 "consume": {"records", "bytes", "seconds", "records_per_sec", "mib_per_sec"}}

(only the inner object with --phase produce or --phase consume). Exits 1
when a record failed or was not read back.

MiB/s counts record values only (SIZE bytes each), as `strata bench
produce` does; keys add 16 bytes a record. Ack latency is the time from
the first produce call of a record to its delivery callback, so, as in
`strata bench produce` without --rate, it includes the wait for room in
the producer's buffer (64 MiB here, as in `strata bench produce`).

Records go to librdkafka through `produce_batch` (confluent-kafka >= 2.11)
in chunks of 1,000, else one `produce` call each: the benchmark measures
the broker's Kafka path, and a Python call per record costs this 2-core
machine about as much CPU as the broker spends on the record.

Usage: bench_kafka.py BOOTSTRAP TOPIC PARTITIONS [--records N] [--size B]
       [--batch-size B] [--no-idempotence] [--phase produce|consume|both]
"""
import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def quantile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


def produce(args):
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "linger.ms": 5,
            # As `strata bench produce`: idempotent, batches of
            # --batch-size (librdkafka's default batch.size unless told),
            # a 64 MiB buffer; the message count is not what bounds it.
            "enable.idempotence": args.idempotence,
            "batch.size": args.batch_size,
            "message.max.bytes": max(1_000_000, args.batch_size + 65536),
            "queue.buffering.max.kbytes": 65536,
            "queue.buffering.max.messages": 10_000_000,
            "compression.codec": "none",
            "statistics.interval.ms": 0,
        }
    )
    value = os.urandom(args.size)
    n = args.records
    # The key is the record's index, so the delivery callback finds its
    # start time without a closure per record.
    started_ns = [0] * n
    latencies_ns = []
    failed = [0, None]

    def on_delivery(err, msg):
        if err is not None:
            failed[0] += 1
            if failed[1] is None:
                failed[1] = str(err)
            return
        latencies_ns.append(time.perf_counter_ns() - started_ns[int(msg.key())])

    keys = [b"%016d" % i for i in range(n)]
    # Metadata first, so connecting is not timed.
    producer.list_topics(args.topic, timeout=30)
    t0 = time.perf_counter()
    if hasattr(producer, "produce_batch"):
        chunk = 1000
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            now = time.perf_counter_ns()
            started_ns[start:end] = [now] * (end - start)
            batch = [{"value": value, "key": keys[i]} for i in range(start, end)]
            while batch:
                queued = producer.produce_batch(args.topic, batch, on_delivery=on_delivery)
                if queued == len(batch):
                    break
                # The buffer is full: retry what was refused once acks
                # free room (poll returns at the first delivery report; a
                # shorter wait spins, and on a 2-core machine the spinning
                # client takes the broker's CPU at object-store latency).
                batch = [{"value": value, "key": m["key"]} for m in batch if "_error" in m]
                producer.poll(0.1)
            producer.poll(0)
    else:
        for i in range(n):
            started_ns[i] = time.perf_counter_ns()
            while True:
                try:
                    producer.produce(args.topic, value, keys[i], on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
    remaining = producer.flush(300)
    seconds = time.perf_counter() - t0
    if remaining:
        raise SystemExit(f"bench_kafka: {remaining} records still unacknowledged after 300 s")
    acked = len(latencies_ns)
    latencies_ns.sort()
    ms = lambda q: quantile(latencies_ns, q) / 1e6  # noqa: E731
    out = {
        "records": acked,
        "failed": failed[0],
        "seconds": seconds,
        "records_per_sec": acked / seconds,
        "mib_per_sec": acked * args.size / seconds / 1_048_576,
        "latency_ms": {
            "p50": ms(0.5),
            "p99": ms(0.99),
            "p999": ms(0.999),
            "max": latencies_ns[-1] / 1e6 if latencies_ns else 0.0,
        },
    }
    if failed[1] is not None:
        out["first_error"] = failed[1]
    return out


def consume(args):
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            # Required by the client; assign() joins no group.
            "group.id": "bench-kafka-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 4 << 20,
            "queued.max.messages.kbytes": 65536,
        }
    )
    consumer.list_topics(args.topic, timeout=30)
    count = 0
    nbytes = 0
    idle_timeout = 10.0
    timed_out = False
    t0 = time.perf_counter()
    consumer.assign([TopicPartition(args.topic, p, 0) for p in range(args.partitions)])
    last = time.perf_counter()
    while count < args.records:
        msgs = consumer.consume(num_messages=10000, timeout=0.5)
        if not msgs:
            if time.perf_counter() - last > idle_timeout:
                timed_out = True
                break
            continue
        last = time.perf_counter()
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
            count += 1
            nbytes += len(m.value())
    seconds = (last if timed_out else time.perf_counter()) - t0
    consumer.close()
    return {
        "records": count,
        "bytes": nbytes,
        "seconds": seconds,
        "records_per_sec": count / seconds,
        "mib_per_sec": nbytes / seconds / 1_048_576,
        "timed_out": timed_out,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("partitions", type=int)
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=1_000_000)
    p.add_argument("--no-idempotence", dest="idempotence", action="store_false")
    p.add_argument("--phase", choices=["produce", "consume", "both"], default="both")
    args = p.parse_args()
    result = {}
    if args.phase in ("produce", "both"):
        result["produce"] = produce(args)
    if args.phase in ("consume", "both"):
        result["consume"] = consume(args)
    print(json.dumps(result if args.phase == "both" else result[args.phase]))
    failed = result.get("produce", {}).get("failed", 0)
    missing = args.records - result.get("consume", {}).get("records", args.records)
    if failed or missing:
        print(f"bench_kafka: {failed} records failed, {missing} not consumed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
