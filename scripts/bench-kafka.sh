#!/usr/bin/env bash
# The Kafka path beside the native path, on the same broker and store: one
# workload (RECORDS records of SIZE bytes, 8 partitions, acks=all, linger
# 5 ms) through confluent-kafka (scripts/bench_kafka.py, 16-byte keys)
# against `strata serve --kafka-addr`, then through `strata bench produce`
# and `strata bench consume` against its gRPC address. Runs on the
# embedded default store (file:// in a temp dir) and on moto's S3 server,
# and prints one markdown table: produce MiB/s, ack p50/p99, consume
# MiB/s, store PUTs (scraped from the broker's /metrics) and the
# Kafka/native throughput ratio (the target is at least 0.90), plus the
# store's raw PUT speed (`strata bench store`).
#
# Environment: RECORDS (200000), SIZE (1024), PARTITIONS (8), BATCH_BYTES
# (262144, the producer batch size of both paths), STORES ("file s3"),
# STRATA (a binary to use instead of building target/release/strata).
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-200000}
SIZE=${SIZE:-1024}
PARTITIONS=${PARTITIONS:-8}
BATCH_BYTES=${BATCH_BYTES:-262144}
STORES=${STORES:-file s3}
# STRATA: a strata binary to use instead of building target/release/strata.
STRATA=${STRATA:-}
PY=.venv/bin/python

WORK=$(mktemp -d -t strata-bench-kafka.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() {
    printf '==> %s\n' "$*" >&2
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU seconds (user + system) a process has used so far.
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Store PUTs so far (single PUTs plus multipart uploads) on a broker.
puts_of() {
    curl -sf "$1/metrics" | awk '
        /^strata_store_requests_total\{op="(put|multipart)"\}/ { n += $2 }
        END { printf "%d\n", n }'
}

if [[ -z $STRATA ]]; then
    step "build strata (release)"
    cargo build --release -p strata-broker --bin strata >&2
    STRATA=target/release/strata
fi

step "Kafka client (confluent-kafka) and moto in .venv"
if [[ ! -x .venv/bin/pip ]]; then
    python3 -m venv --clear .venv
fi
if ! "$PY" -c 'import confluent_kafka' >/dev/null 2>&1; then
    .venv/bin/pip install --quiet --disable-pip-version-check 'confluent-kafka>=2.6'
fi
if [[ " $STORES " == *" s3 "* && ! -x .venv/bin/moto_server ]]; then
    .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi

# Starts a broker on STORE (or the embedded default when empty) with data
# dir DIR; sets BROKER_PID, GRPC, HTTP and KAFKA from its ready line.
start_broker() {
    local dir=$1 store=$2 out=$1/serve.out
    mkdir -p "$dir"
    local args=(serve --data-dir "$dir" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0
        --kafka-addr 127.0.0.1:0)
    if [[ -n $store ]]; then
        args+=(--store "$store")
    fi
    "$STRATA" "${args[@]}" >"$out" 2>"$dir/serve.err" &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    local line=""
    for _ in $(seq 300); do
        line=$(grep -m1 '^strata: serving' "$out" || true)
        [[ -n $line ]] && break
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "bench-kafka: the broker exited; its log:" >&2
            tail -20 "$dir/serve.err" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z $line ]]; then
        echo "bench-kafka: no ready line from the broker within 30 s" >&2
        exit 1
    fi
    GRPC=$(sed -E 's/.* grpc=([^ ]+).*/\1/' <<<"$line")
    HTTP=$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$line")
    KAFKA=$(sed -E 's/.* kafka=([^ ]+).*/\1/' <<<"$line")
    step "broker: $line"
}

stop_broker() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
}

# Waits until the broker's PUT counter has not moved for 2 s (sealing and
# other background work of the previous run done), at most 30 s.
settle() {
    local last now
    last=$(puts_of "$HTTP")
    for _ in $(seq 15); do
        sleep 2
        now=$(puts_of "$HTTP")
        [[ $now == "$last" ]] && return
        last=$now
    done
}

# Runs COMMAND... with its CPU time (user + system seconds) written to FILE.
timed() {
    local file=$1
    shift
    /usr/bin/time -f '%U %S' -o "$file" "$@"
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# Benchmarks both paths on a broker with store URL (the embedded default
# when empty), labelled NAME; RAW_URL is a place in the same store, apart
# from the broker's, for `strata bench store`.
bench_store() {
    local name=$1 url=$2 raw_url=$3 dir=$WORK/$1
    start_broker "$dir" "$url"

    step "$name: raw store speed (strata bench store)"
    local raw
    raw=$("$STRATA" bench store --store "$raw_url" --objects 32 |
        awk '/PUT throughput/ { print $3 }')

    # Kafka path.
    "$STRATA" topic create kafka-bench --partitions "$PARTITIONS" --broker "$GRPC" >&2
    settle
    local p0 c0 p1 c1 p2 c2
    p0=$(puts_of "$HTTP") c0=$(cpu_of "$BROKER_PID")
    step "$name: kafka produce ($RECORDS x $SIZE B, batch.size $BATCH_BYTES)"
    timed "$dir/kp.cpu" "$PY" scripts/bench_kafka.py "$KAFKA" kafka-bench "$PARTITIONS" \
        --records "$RECORDS" --size "$SIZE" --batch-size "$BATCH_BYTES" --phase produce \
        >"$dir/kp.json"
    p1=$(puts_of "$HTTP") c1=$(cpu_of "$BROKER_PID")
    step "$name: kafka consume"
    timed "$dir/kc.cpu" "$PY" scripts/bench_kafka.py "$KAFKA" kafka-bench "$PARTITIONS" \
        --records "$RECORDS" --size "$SIZE" --phase consume >"$dir/kc.json"
    c2=$(cpu_of "$BROKER_PID")
    jq -c --arg store "$name" --arg raw "$raw" \
        --argjson puts $((p1 - p0)) --argjson bcpu "$(jq -n "$c1 - $c0")" \
        --argjson ccpu "$(awk '{ print $1 + $2 }' "$dir/kp.cpu")" \
        --argjson bcpu_c "$(jq -n "$c2 - $c1")" \
        --argjson ccpu_c "$(awk '{ print $1 + $2 }' "$dir/kc.cpu")" \
        --slurpfile c "$dir/kc.json" \
        '{store: $store, path: "kafka", raw_mib: $raw,
          produce_mib: .mib_per_sec, records_per_sec, p50: .latency_ms.p50,
          p99: .latency_ms.p99, consume_mib: $c[0].mib_per_sec, puts: $puts,
          broker_cpu: $bcpu, client_cpu: $ccpu, broker_cpu_consume: $bcpu_c,
          client_cpu_consume: $ccpu_c}' "$dir/kp.json" >>"$RESULTS"

    # Native path, same broker and store.
    "$STRATA" topic create native-bench --partitions "$PARTITIONS" --broker "$GRPC" >&2
    settle
    p0=$(puts_of "$HTTP") c0=$(cpu_of "$BROKER_PID")
    step "$name: native produce (strata bench produce)"
    timed "$dir/np.cpu" "$STRATA" bench produce --topic native-bench --records "$RECORDS" \
        --record-size "$SIZE" --partitions "$PARTITIONS" --acks all --linger 5ms \
        --batch-bytes "$BATCH_BYTES" --json --broker "$GRPC" --metrics-url "$HTTP/metrics" \
        >"$dir/np.json"
    p1=$(puts_of "$HTTP") c1=$(cpu_of "$BROKER_PID")
    step "$name: native consume (strata bench consume)"
    timed "$dir/nc.cpu" "$STRATA" bench consume --topic native-bench --records "$RECORDS" \
        --json --broker "$GRPC" --metrics-url "$HTTP/metrics" >"$dir/nc.json"
    c2=$(cpu_of "$BROKER_PID")
    jq -c --arg store "$name" --arg raw "$raw" \
        --argjson puts $((p1 - p0)) --argjson bcpu "$(jq -n "$c1 - $c0")" \
        --argjson ccpu "$(awk '{ print $1 + $2 }' "$dir/np.cpu")" \
        --argjson bcpu_c "$(jq -n "$c2 - $c1")" \
        --argjson ccpu_c "$(awk '{ print $1 + $2 }' "$dir/nc.cpu")" \
        --slurpfile c "$dir/nc.json" \
        '{store: $store, path: "native", raw_mib: $raw,
          produce_mib: .mib_per_sec, records_per_sec, p50: .latency_ms.p50,
          p99: .latency_ms.p99, consume_mib: $c[0].mib_per_sec, puts: $puts,
          broker_cpu: $bcpu, client_cpu: $ccpu, broker_cpu_consume: $bcpu_c,
          client_cpu_consume: $ccpu_c}' "$dir/np.json" >>"$RESULTS"
    stop_broker
}

for s in $STORES; do
    case $s in
        file)
            bench_store file "" "file://$WORK/raw"
            ;;
        s3)
            port=$(free_port)
            step "moto_server on 127.0.0.1:$port"
            .venv/bin/moto_server -p "$port" >"$WORK/moto.log" 2>&1 &
            PIDS+=("$!")
            for _ in $(seq 100); do
                curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
                sleep 0.1
            done
            curl -sf -X PUT "http://127.0.0.1:$port/strata-bench" >/dev/null
            AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
                AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true \
                bench_store s3 "s3://strata-bench/broker" "s3://strata-bench/raw"
            ;;
        *)
            echo "bench-kafka: unknown store $s (file or s3)" >&2
            exit 2
            ;;
    esac
done

# One table: a row per store and path; the ratio is Kafka over native
# produce throughput on the same store.
echo
echo "$RECORDS records x $SIZE B (+16 B keys on the Kafka path), $PARTITIONS partitions," \
    "acks=all, linger 5 ms, batch $BATCH_BYTES B; MiB/s of record values"
echo
echo "| store | path | produce MiB/s | ack p50 ms | ack p99 ms | consume MiB/s | store PUTs | broker CPU s | client CPU s | Kafka/native | raw store MiB/s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
jq -rs '
    (map(select(.path == "native")) | map({key: .store, value: .produce_mib}) | from_entries) as $native
    | .[]
    | [ .store, .path,
        (.produce_mib | . * 10 | round / 10),
        (.p50 | . * 10 | round / 10),
        (.p99 | . * 10 | round / 10),
        (.consume_mib | . * 10 | round / 10),
        .puts,
        "\(.broker_cpu | . * 10 | round / 10) + \(.broker_cpu_consume | . * 10 | round / 10)",
        "\(.client_cpu | . * 10 | round / 10) + \(.client_cpu_consume | . * 10 | round / 10)",
        (if .path == "kafka" and ($native[.store] // 0) > 0
         then (.produce_mib / $native[.store] * 100 | round / 100) else "" end),
        .raw_mib ]
    | "| " + (map(tostring) | join(" | ")) + " |"' "$RESULTS"
echo
echo "CPU columns: produce + consume phases."
