#!/usr/bin/env bash
# The project's test command: formatting, lints, every test (unit, property,
# integration, S3 conformance against a local moto_server) and doc tests.
# Installs what it needs on first run: moto into .venv (the S3-compatible
# server the tests start; see tests/src/s3.rs), the Kafka clients the Kafka
# front end is tested with (tests/src/python.rs) and cargo-nextest.
#
# Set STRATA_TEST_S3_ENDPOINT to run the S3 tests against another endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
    printf '\n==> %s\n' "$*"
}

step "moto (S3-compatible test server) in .venv"
if [[ ! -x .venv/bin/pip ]]; then
    python3 -m venv --clear .venv
fi
if [[ ! -x .venv/bin/moto_server ]]; then
    .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
export STRATA_MOTO_SERVER="$PWD/.venv/bin/moto_server"
.venv/bin/python -c 'import moto; print("moto", moto.__version__)'

step "Kafka clients (kafka-python, confluent-kafka) in .venv"
if ! .venv/bin/python -c 'import kafka, confluent_kafka' >/dev/null 2>&1; then
    .venv/bin/pip install --quiet --disable-pip-version-check 'kafka-python>=2.3' 'confluent-kafka>=2.6'
fi
export STRATA_TEST_PYTHON="$PWD/.venv/bin/python"
.venv/bin/python -c 'import kafka, confluent_kafka; print("kafka-python", kafka.__version__, "confluent-kafka", confluent_kafka.version()[0], "librdkafka", confluent_kafka.libversion()[0])'

step "kcat (Debian package), where it installs"
if ! command -v kcat >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q kcat >/dev/null 2>&1 ||
        { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q kcat >/dev/null 2>&1; } ||
        true
fi
if command -v kcat >/dev/null 2>&1; then kcat -V | sed -n 1p; else echo "kcat is not installed: its test skips"; fi

./scripts/check-deploy.sh

step "cargo-nextest"
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
cargo nextest --version

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Doc tests before nextest, so that the run closes on nextest's summary
# (the doc-test runner often closes on "0 passed", which reads as "ran no
# test").
step "cargo test --workspace --doc"
cargo test --workspace --doc

# The end-to-end tests start real `strata serve` processes; build the binary
# they run (tests/src/broker.rs finds it in target/debug).
step "cargo build -p strata-broker --bin strata"
cargo build -p strata-broker --bin strata

step "cargo nextest run --workspace --no-fail-fast"
cargo nextest run --workspace --no-fail-fast
