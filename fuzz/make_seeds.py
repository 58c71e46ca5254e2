#!/usr/bin/env python3
"""Writes the seed corpus for the kafka_request fuzz target.

Valid requests at versions the broker serves, packed by hand (no Kafka
library needed). Each is written twice: `<name>.frame` is the bare frame
(what `decode` takes) and `<name>.stream` is the frame behind its 4-byte
length, as a client sends it (what `read_frame` takes). One stream carries
two frames back to back. Run from anywhere:

    python3 fuzz/make_seeds.py
"""

import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "kafka_request")


def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)


def uvarint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def varint(v):  # zigzag, for record fields
    return uvarint((v << 1) ^ (v >> 63))


TAGS = uvarint(0)  # no tagged fields


def string(s):  # classic (non-compact) nullable string
    return i16(-1) if s is None else i16(len(s)) + s.encode()


def cstring(s):  # compact nullable string
    return uvarint(0) if s is None else uvarint(len(s) + 1) + s.encode()


def cbytes(b):
    return uvarint(0) if b is None else uvarint(len(b) + 1) + b


def carray(items):
    return uvarint(len(items) + 1) + b"".join(items)


def array(items):
    return i32(len(items)) + b"".join(items)


def header(api_key, version, correlation_id, flexible):
    h = i16(api_key) + i16(version) + i32(correlation_id) + string("fuzz-seed")
    return h + (TAGS if flexible else b"")


def crc32c(data):
    # Castagnoli, bitwise: the seeds are tiny.
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def record_batch(values):
    records = b""
    for delta, value in enumerate(values):
        body = (i8(0) + varint(0) + varint(delta) + varint(-1)  # attrs, ts, offset, null key
                + varint(len(value)) + value + varint(0))          # value, no headers
        records += varint(len(body)) + body
    after_crc = (i16(0) + i32(len(values) - 1) + i64(1_700_000_000_000) * 2
                 + i64(-1) + i16(-1) + i32(-1) + i32(len(values)) + records)
    after_len = i32(-1) + i8(2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return i64(0) + i32(len(after_len)) + after_len


def api_versions_v3():
    return header(18, 3, 1, True) + cstring("strata-fuzz") + cstring("0.1") + TAGS


def metadata_v12():
    topic = bytes(16) + cstring("orders") + TAGS
    return header(3, 12, 2, True) + carray([topic]) + i8(1) + i8(0) + TAGS


def metadata_v1():
    return header(3, 1, 3, False) + array([string("orders")])


def produce_v9():
    partition = i32(0) + cbytes(record_batch([b"hello", b"world"])) + TAGS
    topic = cstring("orders") + carray([partition]) + TAGS
    return header(0, 9, 4, True) + cstring(None) + i16(-1) + i32(30_000) + carray([topic]) + TAGS


def fetch_v12():
    partition = (i32(0) + i32(-1) + i64(0) + i32(-1) + i64(-1) + i32(1 << 20) + TAGS)
    topic = cstring("orders") + carray([partition]) + TAGS
    body = (i32(-1) + i32(500) + i32(1) + i32(1 << 20) + i8(0) + i32(0) + i32(-1)
            + carray([topic]) + carray([]) + cstring("") + TAGS)
    return header(1, 12, 5, True) + body


def join_group_v5():
    protocol = string("range") + i32(4) + b"\x00\x01\x02\x03"
    body = (string("group") + i32(10_000) + i32(30_000) + string("") + string(None)
            + string("consumer") + array([protocol]))
    return header(11, 5, 6, False) + body


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    frames = {
        "api_versions_v3": api_versions_v3(),
        "metadata_v12": metadata_v12(),
        "metadata_v1": metadata_v1(),
        "produce_v9": produce_v9(),
        "fetch_v12": fetch_v12(),
        "join_group_v5": join_group_v5(),
    }
    for name, frame in frames.items():
        write(name + ".frame", frame)
    for name in ("api_versions_v3", "produce_v9", "join_group_v5"):
        write(name + ".stream", i32(len(frames[name])) + frames[name])
    pair = frames["api_versions_v3"], frames["metadata_v12"]
    write("api_versions_then_metadata.stream", b"".join(i32(len(f)) + f for f in pair))


if __name__ == "__main__":
    main()
