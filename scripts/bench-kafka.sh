#!/usr/bin/env bash
# The Kafka path beside the native path, on the same broker and store: one
# workload (RECORDS records of SIZE bytes, 8 partitions, acks=all, linger
# 5 ms) through confluent-kafka (scripts/bench_kafka.py, 16-byte keys)
# against `strata serve --kafka-addr`, then through `strata bench produce`
# and `strata bench consume` against its gRPC address. Runs on the
# embedded default store (file:// in a temp dir) and on moto's S3 server,
# and prints one markdown table: produce MiB/s, ack p50/p99, consume
# MiB/s, store PUTs (scraped from the broker's /metrics), the CPU of the
# broker, the client and (moto) the store, and the Kafka/native
# throughput ratio (the target is at least 0.90), plus the store's raw
# PUT speed (`strata bench store`).
#
# Environment: RECORDS (200000), SIZE (1024), PARTITIONS (8), BATCH_BYTES
# (1000000: the producer batch size of both paths, by default what both
# clients default to, librdkafka's batch.size and the native producer's
# batch_bytes; 262144 shows a client tuned for smaller batches), ROUNDS (3: produce
# rounds per path, alternating which goes first; the table shows medians,
# since one run on a shared machine swings by half), STORES ("file s3"),
# STRATA (a binary to use instead of building target/release/strata).
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-200000}
SIZE=${SIZE:-1024}
PARTITIONS=${PARTITIONS:-8}
BATCH_BYTES=${BATCH_BYTES:-1000000}
ROUNDS=${ROUNDS:-3}
STORES=${STORES:-file s3}
# STRATA: a strata binary to use instead of building target/release/strata.
STRATA=${STRATA:-}
PY=.venv/bin/python

WORK=$(mktemp -d -t strata-bench-kafka.XXXXXX)
PIDS=()
# The S3 server's process while one runs (its CPU is measured per round).
STORE_PID=""
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

# CPU seconds (user + system) the S3 server has used so far (0 without one).
store_cpu() {
    if [[ -n $STORE_PID ]]; then cpu_of "$STORE_PID"; else echo 0; fi
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

# The broker's ack latency histogram so far: "SUM_SECONDS COUNT".
acks_of() {
    curl -sf "$1/metrics" | awk '
        /^strata_produce_ack_seconds_sum / { s = $2 }
        /^strata_produce_ack_seconds_count / { c = $2 }
        END { printf "%s %s\n", s + 0, c + 0 }'
}

# Mean broker-side ack (ms) between two acks_of readings.
ack_mean_ms() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        n = y[2] - x[2]
        printf "%.2f\n", (n > 0 ? (y[1] - x[1]) / n * 1000 : 0) }'
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

ROUNDS_FILE=$WORK/rounds.jsonl
CONSUMES=$WORK/consumes.jsonl
: >"$ROUNDS_FILE"
: >"$CONSUMES"

# Benchmarks both paths on a broker with store URL (the embedded default
# when empty), labelled NAME; RAW_URL is a place in the same store, apart
# from the broker's, for `strata bench store`. Produce runs ROUNDS times
# per path, alternating which path goes first, each round on fresh topics;
# consume reads the first round's topics.
bench_store() {
    local name=$1 url=$2 raw_url=$3 dir=$WORK/$1
    start_broker "$dir" "$url"

    step "$name: raw store speed (strata bench store)"
    local raw
    raw=$("$STRATA" bench store --store "$raw_url" --objects 32 |
        awk '/PUT throughput/ { print $3 }')

    local r
    for r in $(seq "$ROUNDS"); do
        if ((r % 2)); then
            produce_kafka "$name" "$raw" "$dir" "$r"
            produce_native "$name" "$raw" "$dir" "$r"
        else
            produce_native "$name" "$raw" "$dir" "$r"
            produce_kafka "$name" "$raw" "$dir" "$r"
        fi
    done

    local c0 c1
    c0=$(cpu_of "$BROKER_PID")
    step "$name: kafka consume"
    timed "$dir/kc.cpu" "$PY" scripts/bench_kafka.py "$KAFKA" kafka-bench-1 "$PARTITIONS" \
        --records "$RECORDS" --size "$SIZE" --phase consume >"$dir/kc.json"
    c1=$(cpu_of "$BROKER_PID")
    jq -c --arg store "$name" --argjson bcpu "$(jq -n "$c1 - $c0")" \
        --argjson ccpu "$(awk '{ print $1 + $2 }' "$dir/kc.cpu")" \
        '{store: $store, path: "kafka", consume_mib: .mib_per_sec, broker_cpu: $bcpu,
          client_cpu: $ccpu}' "$dir/kc.json" >>"$CONSUMES"
    c0=$(cpu_of "$BROKER_PID")
    step "$name: native consume (strata bench consume)"
    timed "$dir/nc.cpu" "$STRATA" bench consume --topic native-bench-1 --records "$RECORDS" \
        --json --broker "$GRPC" --metrics-url "$HTTP/metrics" >"$dir/nc.json"
    c1=$(cpu_of "$BROKER_PID")
    jq -c --arg store "$name" --argjson bcpu "$(jq -n "$c1 - $c0")" \
        --argjson ccpu "$(awk '{ print $1 + $2 }' "$dir/nc.cpu")" \
        '{store: $store, path: "native", consume_mib: .mib_per_sec, broker_cpu: $bcpu,
          client_cpu: $ccpu}' "$dir/nc.json" >>"$CONSUMES"
    stop_broker
}

# One produce round through confluent-kafka: NAME RAW DIR ROUND.
produce_kafka() {
    produce_round kafka "$@" "$PY" scripts/bench_kafka.py "$KAFKA" "kafka-bench-$4" \
        "$PARTITIONS" --records "$RECORDS" --size "$SIZE" --batch-size "$BATCH_BYTES" \
        --phase produce
}

# One produce round through `strata bench produce`: NAME RAW DIR ROUND.
produce_native() {
    produce_round native "$@" "$STRATA" bench produce --topic "native-bench-$4" \
        --records "$RECORDS" --record-size "$SIZE" --partitions "$PARTITIONS" --acks all \
        --linger 5ms --batch-bytes "$BATCH_BYTES" --json --broker "$GRPC" \
        --metrics-url "$HTTP/metrics"
}

# Creates topic PATH-bench-ROUND, runs COMMAND... (which produces to it
# and prints its JSON result) and records the round: PATH NAME RAW DIR
# ROUND COMMAND...
produce_round() {
    local path=$1 name=$2 raw=$3 dir=$4 r=$5 p0 c0 a0 s0 p1 c1 a1 s1
    shift 5
    "$STRATA" topic create "$path-bench-$r" --partitions "$PARTITIONS" --broker "$GRPC" >&2
    settle
    p0=$(puts_of "$HTTP") c0=$(cpu_of "$BROKER_PID") a0=$(acks_of "$HTTP") s0=$(store_cpu)
    step "$name: $path produce, round $r ($RECORDS x $SIZE B, batches of $BATCH_BYTES B)"
    timed "$dir/$path-produce.cpu" "$@" >"$dir/$path-produce.json"
    p1=$(puts_of "$HTTP") c1=$(cpu_of "$BROKER_PID") a1=$(acks_of "$HTTP") s1=$(store_cpu)
    record_round "$path" "$name" "$raw" "$((p1 - p0))" "$(jq -n "$c1 - $c0")" \
        "$dir/$path-produce.cpu" "$dir/$path-produce.json" "$(ack_mean_ms "$a0" "$a1")" \
        "$(jq -n "$s1 - $s0")"
}

# Appends one produce round to $ROUNDS_FILE: PATH STORE RAW PUTS BROKER_CPU
# CLIENT_CPU_FILE RESULT_JSON BROKER_ACK_MS STORE_CPU.
record_round() {
    jq -c --arg path "$1" --arg store "$2" --arg raw "$3" --argjson puts "$4" \
        --argjson bcpu "$5" --argjson ccpu "$(awk '{ print $1 + $2 }' "$6")" \
        --argjson back "$8" --argjson scpu "$9" \
        '{store: $store, path: $path, raw_mib: $raw, produce_mib: .mib_per_sec,
          p50: .latency_ms.p50, p99: .latency_ms.p99, puts: $puts, broker_cpu: $bcpu,
          client_cpu: $ccpu, broker_ack_ms: $back, store_cpu: $scpu}' \
        "$7" >>"$ROUNDS_FILE"
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
            STORE_PID=$!
            for _ in $(seq 100); do
                curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
                sleep 0.1
            done
            curl -sf -X PUT "http://127.0.0.1:$port/strata-bench" >/dev/null
            AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
                AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true \
                bench_store s3 "s3://strata-bench/broker" "s3://strata-bench/raw"
            kill "$STORE_PID" 2>/dev/null || true
            STORE_PID=""
            ;;
        *)
            echo "bench-kafka: unknown store $s (file or s3)" >&2
            exit 2
            ;;
    esac
done

# One table: a row per store and path with the median over the rounds;
# the ratio is the median Kafka over the median native produce throughput
# on the same store, followed by each round's ratio (the spread).
echo
echo "$RECORDS records x $SIZE B (+16 B keys on the Kafka path), $PARTITIONS partitions," \
    "acks=all, linger 5 ms, batch $BATCH_BYTES B; MiB/s of record values;" \
    "medians over $ROUNDS produce rounds per path"
echo
echo "| store | path | produce MiB/s | ack p50 ms | ack p99 ms | broker ack ms | consume MiB/s | store PUTs | broker CPU s | client CPU s | store CPU s | Kafka/native (rounds) | raw store MiB/s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
jq -rn --slurpfile rounds "$ROUNDS_FILE" --slurpfile consumes "$CONSUMES" '
    def median: sort | if length == 0 then 0 else .[(length - 1) / 2 | floor] end;
    def r1: . * 10 | round / 10;
    ($rounds | group_by(.store + "/" + .path)) as $groups
    | ($rounds | map(select(.path == "native")) | group_by(.store)
       | map({key: .[0].store, value: (map(.produce_mib) | median)}) | from_entries) as $native
    | $groups[]
    | . as $g
    | ($g[0].store) as $store | ($g[0].path) as $path
    | ($consumes | map(select(.store == $store and .path == $path)) | .[0] // {}) as $c
    | ($g | map(.produce_mib) | median) as $mib
    | [ $store, $path, ($mib | r1),
        ($g | map(.p50) | median | r1), ($g | map(.p99) | median | r1),
        ($g | map(.broker_ack_ms) | median | r1),
        (($c.consume_mib // 0) | r1), ($g | map(.puts) | median),
        "\($g | map(.broker_cpu) | median | r1) + \(($c.broker_cpu // 0) | r1)",
        "\($g | map(.client_cpu) | median | r1) + \(($c.client_cpu // 0) | r1)",
        (if $store == "file" then "-" else ($g | map(.store_cpu) | median | r1) end),
        (if $path == "kafka" and ($native[$store] // 0) > 0
         then "\($mib / $native[$store] * 100 | round / 100) (" + ([range(0; $g | length) as $i
               | ($rounds | map(select(.store == $store and .path == "native")) | .[$i].produce_mib) as $n
               | if ($n // 0) > 0 then ($g[$i].produce_mib / $n * 100 | round / 100 | tostring) else "-" end]
               | join(", ")) + ")"
         else "" end),
        ($g[0].raw_mib) ]
    | "| " + (map(tostring) | join(" | ")) + " |"'
echo
echo "CPU columns: produce + consume phases (store: the S3 server's, produce only)." \
    "Ack p50/p99: as the client saw them" \
    "(buffer wait included); broker ack: the mean from a batch's arrival at the" \
    "broker to its ack (strata_produce_ack_seconds)."
