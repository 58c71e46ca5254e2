# syntax=docker/dockerfile:1
#
# The Strata broker and CLI in a small image:
#   docker build -t strata .
#   docker run --rm -p 9092:9092 -p 50051:50051 -p 9464:9464 strata
# (no flags: an embedded file:// bucket under /var/lib/strata; give it
# STRATA_STORE=s3://bucket/prefix and AWS_* variables for a real one, see
# docker-compose.yml). The entry point is `strata`, the default command
# `serve`, so `docker run --rm strata topic list --broker ...` runs the CLI.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (rustls' crypto, via object_store) may build with cmake.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strata-broker --bin strata \
    && install -m 0755 target/release/strata /usr/local/bin/strata

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: TLS to S3; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 strata \
    && useradd --system --uid 10001 --gid strata --home-dir /var/lib/strata --shell /usr/sbin/nologin strata \
    && install -d -m 0750 -o strata -g strata /var/lib/strata
COPY --from=builder /usr/local/bin/strata /usr/local/bin/strata

# Listeners on every interface (the defaults are loopback); the data
# directory is only a cache when the store is a remote bucket. Each broker
# claims the lowest free broker id in the bucket (broker_id = "auto"), so
# containers of one image can come and go; STRATA_BROKER_ID=7 fixes one.
ENV STRATA_DATA_DIR=/var/lib/strata \
    STRATA_BROKER_ID=auto \
    STRATA_GRPC_ADDR=0.0.0.0:50051 \
    STRATA_KAFKA_ADDR=0.0.0.0:9092 \
    STRATA_HTTP_ADDR=0.0.0.0:9464
VOLUME ["/var/lib/strata"]
EXPOSE 9092 50051 9464
USER strata:strata
WORKDIR /var/lib/strata

# /readyz: 200 once serving, 503 while starting or draining. The port is the
# one STRATA_HTTP_ADDR names.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${STRATA_HTTP_ADDR##*:}/readyz" || exit 1

# SIGTERM drains (partitions move to other brokers) within shutdown_timeout
# (30s by default): give `docker stop` more than that (--time 45, or
# stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["serve"]
