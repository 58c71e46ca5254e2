#!/usr/bin/env python3
"""Soak test (issue #10): does a broker's bucket and memory stay bounded?

Runs one embedded `strata serve` (a `file://` bucket in a scratch
directory) with 1,000 partitions, of which 10% are written continuously
(topic `soak-busy`, 100 partitions, at --rate records/s) and 90% hold one
record each and then stay idle (topic `soak-idle`, 900 partitions). The
broker is restarted every --restart-every minutes, alternately by SIGTERM
(graceful: partitions released) and by kill -9 (the new incarnation takes
its own partitions over). Every minute it prints what the bucket holds per
kind (counted on disk: WAL objects and bytes, tombstones, segments,
manifests, archives) and the broker's RSS. Both columns must plateau.

Not part of CI (it runs for half an hour). Usage:

    cargo build --release -p strata-broker
    scripts/soak.py --minutes 30            # the issue's run
    scripts/soak.py --minutes 3 --restart-every 1 --rate 500   # a smoke run

The bucket sweep runs every minute with a 2-minute grace (the defaults,
15m and 1h, would collect nothing within a short run); other settings are
the broker's defaults unless given with --env KEY=VALUE.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30, help="how long to run (default 30)")
    p.add_argument("--restart-every", type=float, default=5, help="minutes between broker restarts (default 5)")
    p.add_argument("--rate", type=int, default=2000, help="records/s into the busy partitions (default 2000)")
    p.add_argument("--record-size", type=int, default=512, help="value bytes per record (default 512)")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "strata"), help="the strata binary")
    p.add_argument("--dir", help="scratch directory (default: a new temporary one, removed at the end)")
    p.add_argument("--grpc-port", type=int, default=50151)
    p.add_argument("--http-port", type=int, default=9564)
    p.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the broker (repeatable)")
    return p.parse_args()


class Broker:
    def __init__(self, args, data_dir):
        self.args = args
        self.data_dir = data_dir
        self.proc = None
        self.restarts = 0
        self.log = open(os.path.join(data_dir, "broker.log"), "ab")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.args.grpc_port}"

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.args.http_port}/metrics"

    def start(self):
        env = dict(os.environ)
        env.update({
            "STRATA_GC__INTERVAL": "1m",
            "STRATA_GC__GRACE": "2m",
            "RUST_LOG": env.get("RUST_LOG", "info"),
        })
        for kv in self.args.env:
            k, _, v = kv.partition("=")
            env[k] = v
        self.proc = subprocess.Popen(
            [self.args.binary, "serve", "--data-dir", self.data_dir,
             "--grpc-addr", f"127.0.0.1:{self.args.grpc_port}",
             "--http-addr", f"127.0.0.1:{self.args.http_port}"],
            stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.args.http_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"broker exited with {self.proc.returncode}; see {self.data_dir}/broker.log")
            time.sleep(0.2)
        sys.exit("broker not ready within 60s")

    def restart(self):
        self.restarts += 1
        how = "SIGTERM" if self.restarts % 2 else "kill -9"
        if how == "SIGTERM":
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            self.proc.kill()
            self.proc.wait()
        self.start()
        return how

    def rss_mib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def strata(args, broker, *cmd, check=True):
    return subprocess.run([args.binary, *cmd, "--broker", broker.url], check=check,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bucket_inventory(bucket):
    """Objects and bytes per kind, counted on disk (exact, not sampled)."""
    kinds = {k: [0, 0] for k in ("wal", "tombstone", "segment", "manifest", "archive")}
    for root, _dirs, files in os.walk(bucket):
        rel = os.path.relpath(root, bucket).split(os.sep)
        for name in files:
            try:
                size = os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                continue  # collected while we walked

            if rel[0] == "wal" and name.endswith(".wal"):
                kind = "tombstone" if size == 32 else "wal"
            elif rel[0] == "topics" and name.endswith(".seg"):
                kind = "segment"
            elif rel[0] == "topics" and "manifest" in rel:
                kind = "manifest"
            elif rel[0] == "topics" and "archive" in rel:
                kind = "archive"
            else:
                continue
            kinds[kind][0] += 1
            kinds[kind][1] += size
    return kinds


def main():
    args = parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} is missing: run `cargo build --release -p strata-broker` first")
    scratch = args.dir or tempfile.mkdtemp(prefix="strata-soak-")
    data_dir = os.path.join(scratch, "data")
    os.makedirs(data_dir, exist_ok=True)
    bucket = os.path.join(data_dir, "bucket")
    broker = Broker(args, data_dir)
    broker.start()
    try:
        run(args, broker, bucket, scratch)
    finally:
        broker.stop()
    if not args.dir:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args, broker, bucket, scratch):
    print(f"# soak: {args.minutes} min, restart every {args.restart_every} min, "
          f"{args.rate} rec/s x {args.record_size} B into 100 of 1,000 partitions; data in {scratch}",
          flush=True)
    strata(args, broker, "topic", "create", "soak-busy", "--partitions", "100")
    strata(args, broker, "topic", "create", "soak-idle", "--partitions", "900")
    # One record into every idle partition, keyed so each gets one.
    lines = "".join(f"k{i}:v{i}\n" for i in range(5000))
    subprocess.run([args.binary, "produce", "soak-idle", "--key-separator", ":", "--broker", broker.url],
                   input=lines, text=True, check=True, stdout=subprocess.DEVNULL)

    header = (f"{'min':>4} {'wal objs':>9} {'wal MiB':>8} {'tombst':>7} {'segments':>9} "
              f"{'seg MiB':>8} {'manifests':>9} {'archives':>8} {'RSS MiB':>8} {'acked':>9}  event")
    print(header, flush=True)
    started = time.time()
    next_restart = started + args.restart_every * 60
    minute = 0
    acked_total = 0
    event = "start"
    while time.time() - started < args.minutes * 60:
        minute_end = started + (minute + 1) * 60
        # Offer a minute of load in slices, so a restart lands between them.
        while time.time() < minute_end - 1:
            seconds = max(1, min(10, int(minute_end - time.time())))
            out = strata(args, broker, "bench", "produce", "--topic", "soak-busy",
                         "--records", str(args.rate * seconds), "--rate", str(args.rate),
                         "--record-size", str(args.record_size), "--json",
                         "--metrics-url", broker.metrics_url, check=False)
            if out.returncode == 0:
                acked_total += args.rate * seconds
            if time.time() >= next_restart:
                event = f"restart ({broker.restart()})"
                next_restart += args.restart_every * 60
        minute += 1
        inv = bucket_inventory(bucket)
        mib = lambda b: b / (1 << 20)
        print(f"{minute:>4} {inv['wal'][0]:>9} {mib(inv['wal'][1]):>8.1f} {inv['tombstone'][0]:>7} "
              f"{inv['segment'][0]:>9} {mib(inv['segment'][1]):>8.1f} {inv['manifest'][0]:>9} {inv['archive'][0]:>8} "
              f"{broker.rss_mib():>8.0f} {acked_total:>9}  {event}", flush=True)
        event = ""


if __name__ == "__main__":
    main()
