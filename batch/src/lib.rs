//! Kafka RecordBatch v2 (magic 2), the one batch format of Strata: parsing,
//! validation, in-place stamping, building and record decoding. Producers
//! (the client) build batches with it; the broker validates and stores them.
//!
//! This crate owns the on-the-wire and on-disk layout of a record batch. Every
//! byte a producer sends passes through [`Batch::validate`] exactly once; after
//! that the bytes are stored verbatim and read back with the cheap
//! [`Batch::from_trusted`] / [`split_batches`]. Everything is zero-copy over
//! [`bytes::Bytes`]: record keys and values handed out by [`decode_records`]
//! are slices of the batch buffer.
//!
//! Layout (big-endian), offsets in bytes:
//!
//! | at | field                  | type | in CRC |
//! |----|------------------------|------|--------|
//! | 0  | base offset            | i64  | no     |
//! | 8  | batch length (size-12) | i32  | no     |
//! | 12 | partition leader epoch | i32  | no     |
//! | 16 | magic (= 2)            | i8   | no     |
//! | 17 | crc (CRC-32C)          | u32  | no     |
//! | 21 | attributes             | i16  | yes    |
//! | 23 | last offset delta      | i32  | yes    |
//! | 27 | base timestamp         | i64  | yes    |
//! | 35 | max timestamp          | i64  | yes    |
//! | 43 | producer id            | i64  | yes    |
//! | 51 | producer epoch         | i16  | yes    |
//! | 53 | base sequence          | i32  | yes    |
//! | 57 | record count           | i32  | yes    |
//! | 61 | records                | ...  | yes    |
//!
//! Invariants:
//! - A [`Batch`] holds exactly one complete batch: `bytes.len() ==
//!   batch_length + 12 >= 61` and magic is 2.
//! - A batch built by [`Batch::validate`] has a correct CRC, at least one
//!   record, `last_offset_delta == record_count - 1` (data batches), and, when
//!   uncompressed, records whose offset deltas are exactly `0..record_count`.
//!   This is what lets the log assign offsets from the header alone.
//!
//! The one thing a newcomer must not break: [`Batch::stamp`] writes only the
//! base offset and the partition leader epoch, the two fields outside the CRC.
//! Anything that changes a byte at or after offset 21 must recompute the CRC,
//! or every reader that verifies it will reject the batch.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

#[cfg(feature = "compression")]
mod compression;
#[cfg(feature = "compression")]
pub use compression::{MAX_DECOMPRESSED_BYTES, decode_records_any};

/// Size of the fixed RecordBatch v2 header; the records start here.
pub const RECORD_BATCH_OVERHEAD: usize = 61;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end.
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
/// Bytes before and including the batch length field, not counted in it.
const LOG_OVERHEAD: usize = 12;
/// Smallest legal batch length field (header with no records).
const MIN_BATCH_LENGTH: i32 = (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32;
const MAGIC_V2: i8 = 2;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Kafka's "no timestamp" / "no producer" / "no sequence" value.
const NONE_I64: i64 = -1;

/// Longest legal zigzag varint (32-bit) encoding.
const MAX_VARINT_BYTES: usize = 5;
/// Longest legal zigzag varlong (64-bit) encoding.
const MAX_VARLONG_BYTES: usize = 10;

/// Why a byte buffer is not an acceptable RecordBatch v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the fixed 61-byte header.
    #[error(
        "batch is shorter than the 61-byte record batch v2 header; send a complete batch: {len} bytes"
    )]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// The batch length field is smaller than an empty v2 batch.
    #[error(
        "batch length field is below the 49-byte minimum of a v2 batch; the framing is corrupt: {0}"
    )]
    InvalidBatchLength(i32),
    /// The batch length field does not match the bytes that were supplied.
    #[error(
        "batch length field declares {declared} bytes, but the buffer must hold exactly one whole batch: {actual} bytes"
    )]
    LengthMismatch {
        /// Total size the length field declares (`batch_length + 12`).
        declared: usize,
        /// Bytes actually available.
        actual: usize,
    },
    /// Not a v2 batch (old message-set formats are not accepted).
    #[error(
        "unsupported record batch magic, only v2 batches are accepted; upgrade the client: {0}"
    )]
    BadMagic(i8),
    /// The stored CRC-32C does not match the bytes.
    #[error(
        "batch crc-32c mismatch, the bytes were corrupted; resend the batch: stored {expected:#010x}, computed {actual:#010x}"
    )]
    CrcMismatch {
        /// The CRC in the header.
        expected: u32,
        /// The CRC computed over the bytes.
        actual: u32,
    },
    /// The record count field is negative.
    #[error("record count field is negative: {0}")]
    InvalidRecordCount(i32),
    /// The batch declares zero records.
    #[error("batch holds no records; send at least one record per batch")]
    Empty,
    /// More records than [`BatchLimits::max_records`] allows.
    #[error(
        "batch holds more records than the limit of {limit}; split it into smaller batches: {count} records"
    )]
    TooManyRecords {
        /// The record count field.
        count: i32,
        /// The limit.
        limit: i32,
    },
    /// The records section holds a different number of records than the
    /// header says.
    #[error(
        "record count field declares {declared} records, but the records section holds a different number: {found}"
    )]
    RecordCountMismatch {
        /// The record count field.
        declared: i32,
        /// Records actually found.
        found: usize,
    },
    /// `last_offset_delta` is not `record_count - 1`, so the offsets the log
    /// would assign do not match the records.
    #[error(
        "last offset delta must be the record count ({record_count}) minus one: {last_offset_delta}"
    )]
    LastOffsetDeltaMismatch {
        /// The record count field.
        record_count: i32,
        /// The last offset delta field.
        last_offset_delta: i32,
    },
    /// The batch is bigger than [`BatchLimits::max_batch_bytes`].
    #[error(
        "batch exceeds the limit of {limit} bytes; split it into smaller batches: {size} bytes"
    )]
    TooLarge {
        /// The batch size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A record inside the batch does not parse; the text says which record,
    /// where, and what.
    #[error("malformed record: {0}")]
    MalformedRecord(String),
    /// The compression bits hold a codec id Kafka does not define.
    #[error("unknown compression codec in batch attributes, valid ids are 0 to 4: {0}")]
    UnknownCompression(u8),
    /// The operation needs an uncompressed batch (records are not
    /// decompressed here).
    #[error(
        "records of a compressed batch cannot be decoded here; decompress them first: codec {0}"
    )]
    UnsupportedCompression(u8),
    /// A compressed records section that does not decompress, or whose
    /// decompressed size is over the limit.
    #[error("cannot decompress the records section; the batch is corrupt or too large: {0}")]
    Decompression(String),
    /// A control batch (transaction marker) where only data batches are
    /// allowed. Returned by callers such as the produce path.
    #[error(
        "control batches are written only by the transaction coordinator; producers must not send them"
    )]
    ControlBatchNotAllowed,
}

/// Limits applied by [`Batch::validate`].
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Largest accepted batch in bytes, header included. Bigger batches cost
    /// more memory per in-flight request but fewer requests. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Most records accepted in one batch. Default 1,000,000.
    pub max_records: i32,
    /// Largest records section a compressed batch may decompress to when
    /// it is validated (feature `compression`); more is refused as a
    /// decompression bomb. Default 64 MiB (also the most ever allowed).
    pub max_decompressed_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_batch_bytes: 1024 * 1024,
            max_records: 1_000_000,
            max_decompressed_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The compression codec in a batch's attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Records are stored as is.
    None,
    /// gzip (id 1).
    Gzip,
    /// Snappy, xerial framing (id 2).
    Snappy,
    /// LZ4 frame (id 3).
    Lz4,
    /// Zstandard (id 4).
    Zstd,
}

impl Compression {
    /// The codec for a Kafka codec id, or [`BatchError::UnknownCompression`].
    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }

    /// The Kafka codec id (the value of attribute bits 0-2).
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// The fixed 61-byte header of a RecordBatch v2, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the log, see [`Batch::stamp`]).
    pub base_offset: i64,
    /// Size of the batch minus the 12 bytes of base offset and this field.
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 here.
    pub magic: i8,
    /// CRC-32C of the bytes from the attributes to the end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the log-append time).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 when none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 when none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 when none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` (which needs at least 61
    /// bytes). Checks that the magic is 2 and that the batch length field is
    /// at least the size of an empty batch; checks nothing else.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        let too_short = || BatchError::TooShort { len: buf.len() };
        let head = buf.get(..RECORD_BATCH_OVERHEAD).ok_or_else(too_short)?;
        let header = decode_header(head).ok_or_else(too_short)?;
        if header.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(header.magic));
        }
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::InvalidBatchLength(header.batch_length));
        }
        Ok(header)
    }

    /// The compression codec, or [`BatchError::UnknownCompression`] for ids
    /// 5 to 7.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        // Masked to 3 bits, so the cast cannot truncate.
        Compression::from_id((self.attributes & COMPRESSION_MASK) as u8)
    }

    /// True for control batches (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// True when the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Total size of the batch in bytes (`batch_length + 12`).
    pub fn total_size(&self) -> usize {
        usize::try_from(self.batch_length)
            .unwrap_or(0)
            .saturating_add(LOG_OVERHEAD)
    }

    /// Offset of the last record (`base_offset + last_offset_delta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset right after the last record.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// True when the batch comes from an idempotent producer (`producer_id >= 0`).
    pub fn has_producer(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence of the last record: `base_sequence + last_offset_delta`,
    /// wrapping from `i32::MAX` to 0 as Kafka does; -1 when the batch has no
    /// sequence.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let base = i64::from(self.base_sequence);
        let delta = i64::from(self.last_offset_delta);
        let span = i64::from(i32::MAX) + 1;
        // rem_euclid keeps the result in [0, i32::MAX], so the cast is exact.
        (base + delta).rem_euclid(span) as i32
    }

    /// True when record timestamps are the log-append time (`max_timestamp`).
    fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// A validated batch: exactly one RecordBatch in `bytes`.
#[derive(Debug, Clone)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

// A batch is never empty (it always holds a 61-byte header), so an
// `is_empty` would only ever say `false`.
#[allow(clippy::len_without_is_empty)]
impl Batch {
    /// Full validation of untrusted input: exactly one batch, length fields,
    /// magic, CRC-32C, record count > 0, `last_offset_delta == record_count -
    /// 1` (for non-control batches; control batches need `>=`), size limits.
    /// Every record is walked: each record's length field must fit it
    /// exactly, offset deltas must be `0, 1, 2, ...`, and the count must
    /// match. With the `compression` feature, a compressed records section
    /// is decompressed for that walk, bounded by
    /// [`BatchLimits::max_decompressed_bytes`] (a CRC only proves the bytes
    /// are what the producer sent, not that a consumer can read them); the
    /// stored bytes stay compressed. Without it, a compressed section must
    /// only be non-empty. Decompressing costs CPU: call this off the async
    /// runtime for compressed or big batches.
    ///
    /// Never panics, whatever the input.
    pub fn validate(bytes: Bytes, limits: &BatchLimits) -> Result<Batch, BatchError> {
        if bytes.len() > limits.max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: bytes.len(),
                limit: limits.max_batch_bytes,
            });
        }
        let batch = Batch::from_trusted(bytes)?;
        batch.verify_crc()?;
        let header = batch.header;
        let compression = header.compression()?;
        match header.record_count {
            n if n < 0 => return Err(BatchError::InvalidRecordCount(n)),
            0 => return Err(BatchError::Empty),
            n if n > limits.max_records => {
                return Err(BatchError::TooManyRecords {
                    count: n,
                    limit: limits.max_records,
                });
            }
            _ => {}
        }
        let expected_delta = header.record_count - 1; // record_count >= 1 here
        let delta_ok = if header.is_control() {
            header.last_offset_delta >= expected_delta
        } else {
            header.last_offset_delta == expected_delta
        };
        if !delta_ok {
            return Err(BatchError::LastOffsetDeltaMismatch {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if compression == Compression::None {
            check_records(&batch.bytes, RECORD_BATCH_OVERHEAD, header.record_count)?;
        } else if batch.bytes.len() == RECORD_BATCH_OVERHEAD {
            return Err(BatchError::MalformedRecord(format!(
                "compressed records section is empty: codec {}",
                compression.id()
            )));
        } else {
            #[cfg(feature = "compression")]
            {
                let section = batch.bytes.get(RECORD_BATCH_OVERHEAD..).unwrap_or_default();
                let records =
                    compression::decompress(compression, section, limits.max_decompressed_bytes)?;
                check_records(&records, 0, header.record_count)?;
            }
        }
        Ok(batch)
    }

    /// Cheap parse of a batch already validated earlier (read back from our
    /// own objects): header and length only, no CRC and no record walk.
    pub fn from_trusted(bytes: Bytes) -> Result<Batch, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        let declared = header.total_size();
        if declared != bytes.len() {
            return Err(BatchError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        Ok(Batch { header, bytes })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch bytes, exactly as stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives up the batch for its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Size of the batch in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// Number of records.
    pub fn record_count(&self) -> i32 {
        self.header.record_count
    }

    /// Largest record timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp
    }

    /// Writes the base offset and partition leader epoch into the bytes, in
    /// place when the buffer is uniquely owned (`Bytes::try_into_mut`), else
    /// with one copy. Both fields are outside the CRC, which stays unchanged
    /// and valid.
    pub fn stamp(self, base_offset: i64, leader_epoch: i32) -> Batch {
        let mut buf = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        write_at(&mut buf, BASE_OFFSET_AT, &base_offset.to_be_bytes());
        write_at(&mut buf, LEADER_EPOCH_AT, &leader_epoch.to_be_bytes());
        let mut header = self.header;
        header.base_offset = base_offset;
        header.partition_leader_epoch = leader_epoch;
        Batch {
            header,
            bytes: buf.freeze(),
        }
    }

    /// Marks the batch's records as timestamped by the broker (Kafka's
    /// `LogAppendTime`): sets the timestamp-type attribute and
    /// `max_timestamp = now_ms` (readers give every record that time) and
    /// recomputes the CRC, which covers both. In place when the buffer is
    /// uniquely owned, else with one copy; costs a CRC pass over the batch.
    pub fn with_log_append_time(self, now_ms: i64) -> Batch {
        let mut buf = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        let attributes = self.header.attributes | TIMESTAMP_TYPE_BIT;
        write_at(&mut buf, ATTRIBUTES_AT, &attributes.to_be_bytes());
        write_at(&mut buf, MAX_TIMESTAMP_AT, &now_ms.to_be_bytes());
        let crc = crc32c::crc32c(buf.get(ATTRIBUTES_AT..).unwrap_or_default());
        write_at(&mut buf, CRC_AT, &crc.to_be_bytes());
        let mut header = self.header;
        header.attributes = attributes;
        header.max_timestamp = now_ms;
        header.crc = crc;
        Batch {
            header,
            bytes: buf.freeze(),
        }
    }

    /// The smallest and largest record timestamps the header declares
    /// (`base_timestamp`, `max_timestamp`).
    pub fn timestamp_range(&self) -> (i64, i64) {
        (self.header.base_timestamp, self.header.max_timestamp)
    }

    /// Verifies the CRC-32C again (for readers of our own objects that want
    /// end-to-end checking). Costs a pass over the whole batch.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let actual = crc32c::crc32c(self.bytes.get(ATTRIBUTES_AT..).unwrap_or_default());
        if actual != self.header.crc {
            return Err(BatchError::CrcMismatch {
                expected: self.header.crc,
                actual,
            });
        }
        Ok(())
    }
}

/// Iterates concatenated stored batches (as read back from WAL chunks and
/// segments), yielding [`Batch::from_trusted`] on each zero-copy slice. A
/// truncated or garbled tail yields one error, after which the iterator ends.
pub fn split_batches(bytes: Bytes) -> impl Iterator<Item = Result<Batch, BatchError>> {
    let mut rest = bytes;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let next = next_batch(&mut rest);
        if next.is_err() {
            failed = true;
        }
        Some(next)
    })
}

/// Splits the first batch off `rest`.
fn next_batch(rest: &mut Bytes) -> Result<Batch, BatchError> {
    let length_field: [u8; 4] = BeReader(rest.get(BATCH_LENGTH_AT..).unwrap_or_default())
        .take()
        .ok_or(BatchError::TooShort { len: rest.len() })?;
    let batch_length = i32::from_be_bytes(length_field);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidBatchLength(batch_length));
    }
    let declared = usize::try_from(batch_length)
        .unwrap_or(usize::MAX)
        .saturating_add(LOG_OVERHEAD);
    if declared > rest.len() {
        return Err(BatchError::LengthMismatch {
            declared,
            actual: rest.len(),
        });
    }
    Batch::from_trusted(rest.split_to(declared))
}

/// A decoded record (for tests, the CLI and non-Rust-client paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset (`base_offset + offset_delta`).
    pub offset: i64,
    /// Create time, or the log-append time for log-append-time batches.
    pub timestamp: i64,
    /// The key, `None` when null.
    pub key: Option<Bytes>,
    /// The value, `None` when null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order. Keys that are not UTF-8 are decoded lossily, as the
    /// Java client does.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes the records of an uncompressed batch; compressed batches give
/// [`BatchError::UnsupportedCompression`]. Keys and values are zero-copy
/// slices of the batch. Safe on any batch, including unvalidated ones.
pub fn decode_records(batch: &Batch) -> Result<Vec<Record>, BatchError> {
    let header = batch.header();
    let compression = header.compression()?;
    if compression != Compression::None {
        return Err(BatchError::UnsupportedCompression(compression.id()));
    }
    let buf = batch.bytes();
    let log_append_time = header.is_log_append_time();
    let mut records = Vec::new();
    let mut pos = RECORD_BATCH_OVERHEAD;
    while pos < buf.len() {
        let mut header_spans = Vec::new();
        let spans = read_record(buf, &mut pos, records.len(), |k, v| {
            header_spans.push((k, v));
        })?;
        let headers = header_spans
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(buf.get(k).unwrap_or_default()).into_owned();
                (key, v.map(|v| buf.slice(v)))
            })
            .collect();
        records.push(Record {
            offset: header
                .base_offset
                .wrapping_add(i64::from(spans.offset_delta)),
            timestamp: if log_append_time {
                header.max_timestamp
            } else {
                header.base_timestamp.wrapping_add(spans.timestamp_delta)
            },
            key: spans.key.map(|r| buf.slice(r)),
            value: spans.value.map(|r| buf.slice(r)),
            headers,
        });
    }
    if usize::try_from(header.record_count).ok() != Some(records.len()) {
        return Err(BatchError::RecordCountMismatch {
            declared: header.record_count,
            found: records.len(),
        });
    }
    Ok(records)
}

/// Builds an uncompressed RecordBatch v2 with base offset 0 and partition
/// leader epoch -1 (the log stamps both on append).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Encoded records section.
    records: Vec<u8>,
    count: usize,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            producer_id: NONE_I64,
            producer_epoch: -1,
            base_sequence: -1,
            records: Vec::new(),
            count: 0,
            base_timestamp: NONE_I64,
            max_timestamp: NONE_I64,
        }
    }
}

impl BatchBuilder {
    /// An empty builder with no producer (id, epoch, sequence all -1).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the idempotent producer id, epoch and first sequence.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends a record. The first record's timestamp becomes the batch's
    /// base timestamp.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        let mut body =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.push(0); // record attributes, unused
        put_varlong(&mut body, timestamp.wrapping_sub(self.base_timestamp));
        put_varint(&mut body, len_i32(self.count));
        put_nullable(&mut body, key);
        put_nullable(&mut body, value);
        put_varint(&mut body, len_i32(headers.len()));
        for (k, v) in headers {
            put_nullable(&mut body, Some(k.as_bytes()));
            put_nullable(&mut body, *v);
        }
        put_varint(&mut self.records, len_i32(body.len()));
        self.records.extend_from_slice(&body);
        self.count += 1;
    }

    /// Number of records pushed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encodes the batch with correct lengths and CRC. Never panics; an empty
    /// builder gives a zero-record batch, which [`Batch::validate`] rejects.
    pub fn build(&self) -> Bytes {
        self.assemble(Compression::None, &self.records)
    }

    /// Builds a batch whose records section is `records_payload`, an opaque,
    /// already-compressed payload, with the compression attribute set. The
    /// record count, offsets and timestamps come from the records pushed into
    /// this builder. The uncompressed records section to compress is
    /// `self.build().slice(RECORD_BATCH_OVERHEAD..)`.
    pub fn build_with_compression_bits(
        &self,
        records_payload: Bytes,
        compression: Compression,
    ) -> Bytes {
        self.assemble(compression, &records_payload)
    }

    fn assemble(&self, compression: Compression, records: &[u8]) -> Bytes {
        let count = len_i32(self.count);
        let header = BatchHeader {
            base_offset: 0,
            batch_length: 0, // set by set_crc_and_lengths
            partition_leader_epoch: -1,
            magic: MAGIC_V2,
            crc: 0, // set by set_crc_and_lengths
            attributes: i16::from(compression.id()),
            last_offset_delta: count.saturating_sub(1),
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: count,
        };
        let mut out = Vec::with_capacity(RECORD_BATCH_OVERHEAD + records.len());
        write_header(&header, &mut out);
        out.extend_from_slice(records);
        set_crc_and_lengths(&mut out);
        Bytes::from(out)
    }
}

/// Sets the batch length field from the buffer size and recomputes the CRC.
/// Does nothing to a buffer shorter than the header.
pub(crate) fn set_crc_and_lengths(buf: &mut [u8]) {
    if buf.len() < RECORD_BATCH_OVERHEAD {
        return;
    }
    let batch_length = len_i32(buf.len() - LOG_OVERHEAD);
    write_at(buf, BATCH_LENGTH_AT, &batch_length.to_be_bytes());
    let crc = crc32c::crc32c(buf.get(ATTRIBUTES_AT..).unwrap_or_default());
    write_at(buf, CRC_AT, &crc.to_be_bytes());
}

fn write_header(h: &BatchHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&h.batch_length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.extend_from_slice(&h.magic.to_be_bytes());
    out.extend_from_slice(&h.crc.to_be_bytes());
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.record_count.to_be_bytes());
}

/// Copies `src` to `buf[at..]` when it fits (always, for the fixed header
/// fields of a batch).
fn write_at(buf: &mut [u8], at: usize, src: &[u8]) {
    if let Some(dst) = at
        .checked_add(src.len())
        .and_then(|end| buf.get_mut(at..end))
    {
        dst.copy_from_slice(src);
    }
}

/// A length as the i32 Kafka encodes; saturates for sizes beyond 2 GiB, which
/// no valid batch has.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Decodes the 13 header fields from the front of `head`.
fn decode_header(head: &[u8]) -> Option<BatchHeader> {
    let mut r = BeReader(head);
    Some(BatchHeader {
        base_offset: i64::from_be_bytes(r.take()?),
        batch_length: i32::from_be_bytes(r.take()?),
        partition_leader_epoch: i32::from_be_bytes(r.take()?),
        magic: i8::from_be_bytes(r.take()?),
        crc: u32::from_be_bytes(r.take()?),
        attributes: i16::from_be_bytes(r.take()?),
        last_offset_delta: i32::from_be_bytes(r.take()?),
        base_timestamp: i64::from_be_bytes(r.take()?),
        max_timestamp: i64::from_be_bytes(r.take()?),
        producer_id: i64::from_be_bytes(r.take()?),
        producer_epoch: i16::from_be_bytes(r.take()?),
        base_sequence: i32::from_be_bytes(r.take()?),
        record_count: i32::from_be_bytes(r.take()?),
    })
}

/// Reads fixed-size big-endian fields front to back.
struct BeReader<'a>(&'a [u8]);

impl BeReader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (first, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*first)
    }
}

/// Checks every record of an uncompressed batch: each one parses, its length
/// field fits it exactly, offset deltas run 0, 1, 2, ..., and the count
/// matches the header.
/// Walks the records in `buf` from `start` to its end.
fn check_records(buf: &[u8], start: usize, declared: i32) -> Result<(), BatchError> {
    let mut pos = start;
    let mut found = 0usize;
    while pos < buf.len() {
        let start = pos;
        let spans = read_record(buf, &mut pos, found, |_, _| {})?;
        if usize::try_from(spans.offset_delta).ok() != Some(found) {
            return Err(BatchError::MalformedRecord(format!(
                "record {found} at byte {start}: offset delta is out of sequence, expected {found}: {}",
                spans.offset_delta
            )));
        }
        found += 1;
    }
    if usize::try_from(declared).ok() != Some(found) {
        return Err(BatchError::RecordCountMismatch { declared, found });
    }
    Ok(())
}

/// Where one record's parts are in the batch buffer.
#[derive(Debug)]
struct RecordSpans {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// Parses the record at `*pos` in `buf` (the whole batch) and moves `*pos`
/// past it. Headers go to `on_header` as (key, value) ranges.
fn read_record(
    buf: &[u8],
    pos: &mut usize,
    index: usize,
    mut on_header: impl FnMut(Range<usize>, Option<Range<usize>>),
) -> Result<RecordSpans, BatchError> {
    let start = *pos;
    let malformed = |field: &str, err: CursorError| {
        BatchError::MalformedRecord(format!("record {index} at byte {start}: {field} {err}"))
    };
    let mut cur = Cursor {
        buf,
        pos: start,
        end: buf.len(),
    };
    let length = cur.varint().map_err(|e| malformed("length", e))?;
    let length =
        usize::try_from(length).map_err(|_| malformed("length", CursorError::BadLength(length)))?;
    cur.end = cur
        .pos
        .checked_add(length)
        .filter(|&end| end <= buf.len())
        .ok_or_else(|| malformed("body", CursorError::PastBatchEnd(length)))?;
    cur.byte().map_err(|e| malformed("attributes", e))?;
    let timestamp_delta = cur.varlong().map_err(|e| malformed("timestamp delta", e))?;
    let offset_delta = cur.varint().map_err(|e| malformed("offset delta", e))?;
    let key = cur.nullable().map_err(|e| malformed("key", e))?;
    let value = cur.nullable().map_err(|e| malformed("value", e))?;
    let header_count = cur.varint().map_err(|e| malformed("header count", e))?;
    if header_count < 0 {
        return Err(malformed(
            "header count",
            CursorError::BadLength(header_count),
        ));
    }
    // Each header takes at least two bytes, so a lying count runs out of
    // bytes long before it runs out of iterations.
    for _ in 0..header_count {
        let header_key = match cur.nullable() {
            Ok(Some(k)) => k,
            Ok(None) => return Err(malformed("header key", CursorError::BadLength(-1))),
            Err(e) => return Err(malformed("header key", e)),
        };
        let header_value = cur.nullable().map_err(|e| malformed("header value", e))?;
        on_header(header_key, header_value);
    }
    if cur.pos != cur.end {
        return Err(malformed(
            "length",
            CursorError::Unread(cur.end.saturating_sub(cur.pos)),
        ));
    }
    *pos = cur.end;
    Ok(RecordSpans {
        timestamp_delta,
        offset_delta,
        key,
        value,
    })
}

/// What went wrong reading one field of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorError {
    /// The field runs past the record's length.
    Truncated,
    /// A varint longer than its type allows.
    Overlong,
    /// A length or count outside its legal range.
    BadLength(i32),
    /// The record length runs past the end of the batch.
    PastBatchEnd(usize),
    /// The record length leaves bytes nothing reads.
    Unread(usize),
}

impl std::fmt::Display for CursorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CursorError::Truncated => write!(f, "runs past the end of the record"),
            CursorError::Overlong => write!(f, "is an overlong varint"),
            CursorError::BadLength(n) => write!(f, "has an invalid length or count: {n}"),
            CursorError::PastBatchEnd(n) => {
                write!(f, "runs past the end of the batch: length {n}")
            }
            CursorError::Unread(n) => {
                write!(
                    f,
                    "field covers more bytes than the record uses: {n} unread"
                )
            }
        }
    }
}

/// Bounds-checked reader over `buf[pos..end]`.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, CursorError> {
        if self.pos >= self.end {
            return Err(CursorError::Truncated);
        }
        let b = *self.buf.get(self.pos).ok_or(CursorError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Unsigned LEB128 of at most `max_bytes` bytes whose value fits in
    /// `bits` bits.
    fn leb128(&mut self, max_bytes: usize, bits: u32) -> Result<u64, CursorError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            let shift = 7 * i as u32;
            let payload = u64::from(b & 0x7f);
            if i + 1 == max_bytes {
                // The last byte may carry only the bits left in the type and
                // no continuation bit.
                if b & 0x80 != 0 || payload >> (bits - shift) != 0 {
                    return Err(CursorError::Overlong);
                }
            }
            value |= payload << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CursorError::Overlong)
    }

    /// Zigzag varint (i32), at most 5 bytes.
    fn varint(&mut self) -> Result<i32, CursorError> {
        // At most 32 bits, checked by leb128, so the cast is exact.
        let raw = self.leb128(MAX_VARINT_BYTES, 32)? as u32;
        Ok((raw >> 1) as i32 ^ -((raw & 1) as i32))
    }

    /// Zigzag varlong (i64), at most 10 bytes.
    fn varlong(&mut self) -> Result<i64, CursorError> {
        let raw = self.leb128(MAX_VARLONG_BYTES, 64)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    /// A varint length (-1 for null) followed by that many bytes.
    fn nullable(&mut self) -> Result<Option<Range<usize>>, CursorError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < -1 => Err(CursorError::BadLength(n)),
            n => {
                let len = usize::try_from(n).map_err(|_| CursorError::BadLength(n))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|&end| end <= self.end)
                    .ok_or(CursorError::Truncated)?;
                let range = self.pos..end;
                self.pos = end;
                Ok(Some(range))
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_leb128(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_leb128(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_leb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, len_i32(b.len()));
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limits() -> BatchLimits {
        BatchLimits::default()
    }

    fn sample() -> BatchBuilder {
        let mut b = BatchBuilder::new().producer(7, 3, 100);
        b.push(1_000, Some(b"k1"), Some(b"v1"), &[]);
        b.push(990, None, Some(b"v2"), &[("h", Some(b"x")), ("n", None)]);
        b.push(1_500, Some(b""), None, &[]);
        b
    }

    /// Applies `f` to a copy of `bytes`, then fixes lengths and CRC.
    fn tamper(bytes: &Bytes, f: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        let mut v = bytes.to_vec();
        f(&mut v);
        set_crc_and_lengths(&mut v);
        Bytes::from(v)
    }

    fn set_i32(v: &mut [u8], at: usize, x: i32) {
        v[at..at + 4].copy_from_slice(&x.to_be_bytes());
    }

    #[test]
    fn round_trip_builder_validate_decode() {
        let bytes = sample().build();
        let batch = Batch::validate(bytes.clone(), &limits()).unwrap();
        let h = *batch.header();
        assert_eq!(h.magic, 2);
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_500);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 3, 100)
        );
        assert_eq!(h.last_sequence(), 102);
        assert!(h.has_producer());
        assert!(!h.is_control() && !h.is_transactional());
        assert_eq!(h.compression().unwrap(), Compression::None);
        assert_eq!(h.total_size(), bytes.len());
        assert_eq!(batch.len(), bytes.len());
        assert_eq!(batch.last_offset(), 2);
        assert_eq!(h.next_offset(), 3);

        let records = decode_records(&batch).unwrap();
        assert_eq!(
            records,
            vec![
                Record {
                    offset: 0,
                    timestamp: 1_000,
                    key: Some(Bytes::from_static(b"k1")),
                    value: Some(Bytes::from_static(b"v1")),
                    headers: vec![],
                },
                Record {
                    offset: 1,
                    timestamp: 990,
                    key: None,
                    value: Some(Bytes::from_static(b"v2")),
                    headers: vec![
                        ("h".to_string(), Some(Bytes::from_static(b"x"))),
                        ("n".to_string(), None)
                    ],
                },
                Record {
                    offset: 2,
                    timestamp: 1_500,
                    key: Some(Bytes::new()),
                    value: None,
                    headers: vec![],
                },
            ]
        );
        // Zero-copy: the value points into the batch buffer.
        let v = records[0].value.as_ref().unwrap();
        let range = batch.bytes().as_ptr_range();
        assert!(range.contains(&v.as_ptr()));
    }

    #[test]
    fn builder_defaults() {
        let b = BatchBuilder::default();
        assert!(b.is_empty());
        let mut b = BatchBuilder::new();
        b.push(5, None, None, &[]);
        assert_eq!(b.len(), 1);
        let batch = Batch::validate(b.build(), &limits()).unwrap();
        let h = batch.header();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert!(!h.has_producer());
        assert_eq!(h.last_sequence(), -1);
        assert_eq!(h.partition_leader_epoch, -1);
    }

    #[test]
    fn stamp_changes_offset_and_epoch_and_keeps_crc() {
        let batch = Batch::validate(sample().build(), &limits()).unwrap();
        let stamped = batch.stamp(1_000_000, 42);
        assert_eq!(stamped.base_offset(), 1_000_000);
        assert_eq!(stamped.last_offset(), 1_000_002);
        assert_eq!(stamped.header().partition_leader_epoch, 42);
        stamped.verify_crc().unwrap();
        let again = Batch::validate(stamped.bytes().clone(), &limits()).unwrap();
        assert_eq!(again.header(), stamped.header());
        let offsets: Vec<i64> = decode_records(&again)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, vec![1_000_000, 1_000_001, 1_000_002]);
    }

    #[test]
    fn log_append_time_sets_every_record_time_and_a_valid_crc() {
        let batch = Batch::validate(sample().build(), &limits()).unwrap();
        let (first, max) = batch.timestamp_range();
        assert!(first <= max);
        let stamped = batch.with_log_append_time(1_700_000_000_123).stamp(10, 1);
        stamped.verify_crc().unwrap();
        let again = Batch::validate(stamped.bytes().clone(), &limits()).unwrap();
        assert_eq!(again.max_timestamp(), 1_700_000_000_123);
        for r in decode_records(&again).unwrap() {
            assert_eq!(r.timestamp, 1_700_000_000_123, "record {}", r.offset);
        }
    }

    #[test]
    fn stamp_in_place_when_unique() {
        let bytes = sample().build();
        let ptr = bytes.as_ptr();
        let batch = Batch::validate(bytes, &limits()).unwrap();
        let stamped = batch.stamp(77, 5);
        assert_eq!(
            stamped.bytes().as_ptr(),
            ptr,
            "unique buffer must be stamped in place"
        );
        assert_eq!(stamped.base_offset(), 77);
    }

    #[test]
    fn stamp_copies_when_shared() {
        let bytes = sample().build();
        let batch = Batch::validate(bytes.clone(), &limits()).unwrap();
        let stamped = batch.stamp(77, 5);
        assert_ne!(stamped.bytes().as_ptr(), bytes.as_ptr());
        // The other holder's bytes are untouched.
        assert_eq!(BatchHeader::parse(&bytes).unwrap().base_offset, 0);
        assert_eq!(stamped.base_offset(), 77);
        stamped.verify_crc().unwrap();
    }

    #[test]
    fn flipped_record_byte_is_crc_mismatch() {
        let bytes = sample().build();
        let mut v = bytes.to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        let err = Batch::validate(Bytes::from(v), &limits()).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }), "{err}");
        // from_trusted does not look, verify_crc does.
        let mut v = bytes.to_vec();
        v[RECORD_BATCH_OVERHEAD + 2] ^= 0x40;
        let trusted = Batch::from_trusted(Bytes::from(v)).unwrap();
        assert!(matches!(
            trusted.verify_crc(),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn truncation_is_rejected() {
        let bytes = sample().build();
        let err = Batch::validate(bytes.slice(..bytes.len() - 1), &limits()).unwrap_err();
        assert_eq!(
            err,
            BatchError::LengthMismatch {
                declared: bytes.len(),
                actual: bytes.len() - 1
            }
        );
        let err = Batch::validate(bytes.slice(..30), &limits()).unwrap_err();
        assert_eq!(err, BatchError::TooShort { len: 30 });
        let err = Batch::validate(Bytes::new(), &limits()).unwrap_err();
        assert_eq!(err, BatchError::TooShort { len: 0 });
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let bytes = sample().build();
        let mut v = bytes.to_vec();
        v.extend_from_slice(b"junk");
        let err = Batch::validate(Bytes::from(v), &limits()).unwrap_err();
        assert_eq!(
            err,
            BatchError::LengthMismatch {
                declared: bytes.len(),
                actual: bytes.len() + 4
            }
        );
        // Garbage inside the records section, with length and CRC fixed up.
        let fixed = tamper(&bytes, |v| v.extend_from_slice(&[0x00]));
        let err = Batch::validate(fixed, &limits()).unwrap_err();
        assert!(matches!(err, BatchError::MalformedRecord(_)), "{err}");
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let bytes = sample().build();
        let mut v = bytes.to_vec();
        v[16] = 1;
        let err = Batch::validate(Bytes::from(v), &limits()).unwrap_err();
        assert_eq!(err, BatchError::BadMagic(1));
        assert!(err.to_string().ends_with(": 1"));
    }

    #[test]
    fn bad_batch_length_is_rejected() {
        let bytes = sample().build();
        let mut v = bytes.to_vec();
        set_i32(&mut v, 8, -5);
        let err = Batch::validate(Bytes::from(v), &limits()).unwrap_err();
        assert_eq!(err, BatchError::InvalidBatchLength(-5));
    }

    #[test]
    fn count_mismatch_is_rejected() {
        let bytes = sample().build();
        // Claim 4 records (and a matching last offset delta) over 3.
        let more = tamper(&bytes, |v| {
            set_i32(v, 57, 4);
            set_i32(v, 23, 3);
        });
        let err = Batch::validate(more, &limits()).unwrap_err();
        assert_eq!(
            err,
            BatchError::RecordCountMismatch {
                declared: 4,
                found: 3
            }
        );
        let fewer = tamper(&bytes, |v| {
            set_i32(v, 57, 2);
            set_i32(v, 23, 1);
        });
        let err = Batch::validate(fewer, &limits()).unwrap_err();
        assert_eq!(
            err,
            BatchError::RecordCountMismatch {
                declared: 2,
                found: 3
            }
        );
    }

    #[test]
    fn last_offset_delta_mismatch_is_rejected() {
        let bytes = sample().build();
        let bad = tamper(&bytes, |v| set_i32(v, 23, 5));
        let err = Batch::validate(bad, &limits()).unwrap_err();
        assert_eq!(
            err,
            BatchError::LastOffsetDeltaMismatch {
                record_count: 3,
                last_offset_delta: 5
            }
        );
    }

    #[test]
    fn negative_count_is_rejected() {
        let bytes = sample().build();
        let bad = tamper(&bytes, |v| set_i32(v, 57, -3));
        assert_eq!(
            Batch::validate(bad, &limits()).unwrap_err(),
            BatchError::InvalidRecordCount(-3)
        );
    }

    #[test]
    fn out_of_sequence_offset_delta_is_rejected() {
        let mut b = BatchBuilder::new();
        b.push(1, None, Some(b"a"), &[]);
        let one = b.build();
        // Record: [len][attr][ts delta][offset delta = 0 -> zigzag 0]...
        // Set offset delta to 1 (zigzag 2).
        let bad = tamper(&one, |v| v[RECORD_BATCH_OVERHEAD + 3] = 2);
        let err = Batch::validate(bad, &limits()).unwrap_err();
        assert!(
            matches!(&err, BatchError::MalformedRecord(m) if m.contains("offset delta")),
            "{err}"
        );
    }

    #[test]
    fn oversize_is_rejected() {
        let bytes = sample().build();
        let small = BatchLimits {
            max_batch_bytes: bytes.len() - 1,
            ..limits()
        };
        assert_eq!(
            Batch::validate(bytes.clone(), &small).unwrap_err(),
            BatchError::TooLarge {
                size: bytes.len(),
                limit: bytes.len() - 1
            }
        );
        let few = BatchLimits {
            max_records: 2,
            ..limits()
        };
        assert_eq!(
            Batch::validate(bytes.clone(), &few).unwrap_err(),
            BatchError::TooManyRecords { count: 3, limit: 2 }
        );
        let exact = BatchLimits {
            max_batch_bytes: bytes.len(),
            max_records: 3,
            ..BatchLimits::default()
        };
        Batch::validate(bytes, &exact).unwrap();
    }

    #[test]
    fn zero_records_is_rejected() {
        let bytes = BatchBuilder::new().build();
        assert_eq!(bytes.len(), RECORD_BATCH_OVERHEAD);
        assert_eq!(
            Batch::validate(bytes.clone(), &limits()).unwrap_err(),
            BatchError::Empty
        );
        // Trusted parsing still works on it.
        assert_eq!(Batch::from_trusted(bytes).unwrap().record_count(), 0);
    }

    #[test]
    fn compressed_batches_are_not_decoded() {
        let b = sample();
        let payload = Bytes::from_static(b"pretend-gzip");
        let bytes = b.build_with_compression_bits(payload.clone(), Compression::Gzip);
        // Validation decompresses only with the `compression` feature.
        let validated = Batch::validate(bytes.clone(), &limits());
        if cfg!(feature = "compression") {
            assert!(matches!(validated, Err(BatchError::Decompression(_))));
        } else {
            assert!(validated.is_ok());
        }
        let batch = Batch::from_trusted(bytes).unwrap();
        assert_eq!(batch.header().compression().unwrap(), Compression::Gzip);
        assert_eq!(batch.record_count(), 3);
        assert_eq!(batch.bytes().slice(RECORD_BATCH_OVERHEAD..), payload);
        assert_eq!(
            decode_records(&batch).unwrap_err(),
            BatchError::UnsupportedCompression(1)
        );
        // Empty compressed payload.
        let empty = b.build_with_compression_bits(Bytes::new(), Compression::Zstd);
        assert!(matches!(
            Batch::validate(empty, &limits()).unwrap_err(),
            BatchError::MalformedRecord(_)
        ));
        // The uncompressed records section round-trips through the helper.
        let raw = b.build().slice(RECORD_BATCH_OVERHEAD..);
        let same = b.build_with_compression_bits(raw, Compression::None);
        assert_eq!(same, b.build());
    }

    #[test]
    fn unknown_compression_is_rejected() {
        let bytes = sample().build();
        let bad = tamper(&bytes, |v| v[22] |= 0x07);
        assert_eq!(
            Batch::validate(bad, &limits()).unwrap_err(),
            BatchError::UnknownCompression(7)
        );
        for id in 0..=4u8 {
            assert_eq!(Compression::from_id(id).unwrap().id(), id);
        }
    }

    #[test]
    fn control_batches() {
        let mut b = BatchBuilder::new().producer(9, 0, -1);
        b.push(10, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
        let ctrl = tamper(&b.build(), |v| v[22] |= 0x30);
        let batch = Batch::validate(ctrl, &limits()).unwrap();
        assert!(batch.header().is_control());
        assert!(batch.header().is_transactional());
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let bytes = tamper(&sample().build(), |v| {
            v[22] |= 0x08;
            v[35..43].copy_from_slice(&9_999i64.to_be_bytes());
        });
        let batch = Batch::validate(bytes, &limits()).unwrap();
        assert!(
            decode_records(&batch)
                .unwrap()
                .iter()
                .all(|r| r.timestamp == 9_999)
        );
    }

    #[test]
    fn last_sequence_wraps_like_kafka() {
        let mut h = *Batch::validate(sample().build(), &limits())
            .unwrap()
            .header();
        h.base_sequence = i32::MAX - 1;
        h.last_offset_delta = 3;
        assert_eq!(h.last_sequence(), 1);
        h.base_sequence = i32::MAX;
        h.last_offset_delta = 0;
        assert_eq!(h.last_sequence(), i32::MAX);
        h.last_offset_delta = 1;
        assert_eq!(h.last_sequence(), 0);
    }

    #[test]
    fn split_batches_over_concatenation() {
        let mut all = Vec::new();
        let mut expected = Vec::new();
        let mut next = 0i64;
        for n in 1..=3 {
            let mut b = BatchBuilder::new();
            for i in 0..n {
                b.push(i, None, Some(b"v"), &[]);
            }
            let batch = Batch::validate(b.build(), &limits())
                .unwrap()
                .stamp(next, 1);
            expected.push((next, batch.last_offset()));
            next = batch.header().next_offset();
            all.extend_from_slice(batch.bytes());
        }
        let all = Bytes::from(all);
        let got: Vec<(i64, i64)> = split_batches(all.clone())
            .map(|b| {
                let b = b.unwrap();
                b.verify_crc().unwrap();
                (b.base_offset(), b.last_offset())
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got, vec![(0, 0), (1, 2), (3, 5)]);

        // Zero-copy slices.
        let first = split_batches(all.clone()).next().unwrap().unwrap();
        assert_eq!(first.bytes().as_ptr(), all.as_ptr());

        // Truncated tail: good batches, then one error, then the end.
        let cut = all.slice(..all.len() - 5);
        let items: Vec<_> = split_batches(cut).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(matches!(items[2], Err(BatchError::LengthMismatch { .. })));

        // A tail too short to hold the length field.
        let mut v = all.to_vec();
        v.extend_from_slice(&[0; 5]);
        let items: Vec<_> = split_batches(Bytes::from(v)).collect();
        assert_eq!(items.len(), 4);
        assert!(matches!(items[3], Err(BatchError::TooShort { len: 5 })));

        assert_eq!(split_batches(Bytes::new()).count(), 0);
    }

    #[test]
    fn varints_round_trip_and_reject_overlong() {
        for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= MAX_VARINT_BYTES);
            let mut c = Cursor {
                buf: &out,
                pos: 0,
                end: out.len(),
            };
            assert_eq!(c.varint(), Ok(v));
            assert_eq!(c.pos, out.len());
        }
        for v in [0, -1, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert!(out.len() <= MAX_VARLONG_BYTES);
            let mut c = Cursor {
                buf: &out,
                pos: 0,
                end: out.len(),
            };
            assert_eq!(c.varlong(), Ok(v));
        }
        let reject = |bytes: &[u8], long: bool| {
            let mut c = Cursor {
                buf: bytes,
                pos: 0,
                end: bytes.len(),
            };
            if long {
                c.varlong().map(|_| ())
            } else {
                c.varint().map(|_| ())
            }
        };
        // Six bytes for a varint, eleven for a varlong.
        assert_eq!(
            reject(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], false),
            Err(CursorError::Overlong)
        );
        assert_eq!(reject(&[0x80; 11], true), Err(CursorError::Overlong));
        // Bits beyond the type's width in the last byte.
        assert_eq!(
            reject(&[0xff, 0xff, 0xff, 0xff, 0x1f], false),
            Err(CursorError::Overlong)
        );
        assert_eq!(
            reject(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03],
                true
            ),
            Err(CursorError::Overlong)
        );
        // Running out of bytes.
        assert_eq!(reject(&[0x80, 0x80], false), Err(CursorError::Truncated));
        assert_eq!(reject(&[], true), Err(CursorError::Truncated));
    }

    #[test]
    fn overlong_varint_in_record_is_rejected() {
        // A record whose length varint has six bytes.
        let bad = tamper(&BatchBuilder::new().build(), |v| {
            set_i32(v, 57, 1);
            set_i32(v, 23, 0);
            v.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        });
        let err = Batch::validate(bad, &limits()).unwrap_err();
        assert!(
            matches!(&err, BatchError::MalformedRecord(m) if m.contains("overlong")),
            "{err}"
        );
    }

    #[test]
    fn error_messages_are_lowercase() {
        let errors = [
            BatchError::TooShort { len: 3 },
            BatchError::BadMagic(0),
            BatchError::Empty,
            BatchError::CrcMismatch {
                expected: 1,
                actual: 2,
            },
            BatchError::ControlBatchNotAllowed,
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.starts_with(|c: char| c.is_lowercase()), "{s}");
        }
    }

    type RawRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn raw_record() -> impl Strategy<Value = RawRecord> {
        (
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    ".{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                ),
                0..4,
            ),
        )
    }

    fn build(records: &[RawRecord]) -> Bytes {
        let mut b = BatchBuilder::new().producer(1, 2, 3);
        for (ts, k, v, hs) in records {
            let hs: Vec<(&str, Option<&[u8]>)> =
                hs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            b.push(*ts, k.as_deref(), v.as_deref(), &hs);
        }
        b.build()
    }

    /// Everything that reads bytes must survive them.
    fn poke_everything(bytes: Bytes) {
        if let Ok(valid) = Batch::validate(bytes.clone(), &limits()) {
            // What validate accepts, decode_records can read.
            if valid.header().compression() == Ok(Compression::None) {
                let records = decode_records(&valid).unwrap();
                assert_eq!(records.len(), valid.record_count() as usize);
            }
        }
        if let Ok(b) = Batch::from_trusted(bytes.clone()) {
            let _ = b.verify_crc();
            let _ = decode_records(&b);
            let h = *b.header();
            let _ = (
                h.last_offset(),
                h.next_offset(),
                h.last_sequence(),
                h.total_size(),
            );
            let _ = b.stamp(i64::MAX, -1);
        }
        for b in split_batches(bytes).flatten() {
            let _ = decode_records(&b);
        }
    }

    proptest! {
        #[test]
        fn prop_round_trip(records in proptest::collection::vec(raw_record(), 1..20),
                           base in any::<i64>(), epoch in any::<i32>()) {
            let bytes = build(&records);
            let batch = Batch::validate(bytes, &limits()).unwrap();
            prop_assert_eq!(batch.record_count() as usize, records.len());
            let max_ts = records.iter().map(|r| r.0).max().unwrap();
            prop_assert_eq!(batch.max_timestamp(), max_ts);
            let batch = batch.stamp(base, epoch);
            let batch = Batch::validate(batch.into_bytes(), &limits()).unwrap();
            let decoded = decode_records(&batch).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (d, (ts, k, v, hs))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(d.offset, base.wrapping_add(i as i64));
                prop_assert_eq!(d.timestamp, *ts);
                prop_assert_eq!(d.key.as_deref(), k.as_deref());
                prop_assert_eq!(d.value.as_deref(), v.as_deref());
                let want: Vec<(String, Option<Bytes>)> = hs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().map(Bytes::from)))
                    .collect();
                prop_assert_eq!(&d.headers, &want);
            }
        }

        #[test]
        fn prop_byte_flips_never_panic(records in proptest::collection::vec(raw_record(), 1..5),
                                        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4)) {
            let bytes = build(&records);
            let mut v = bytes.to_vec();
            let mut touched_crc_range = false;
            for (idx, mask) in &flips {
                let i = idx.index(v.len());
                v[i] ^= mask;
                touched_crc_range |= i >= CRC_AT;
            }
            let corrupted = Bytes::from(v);
            let result = Batch::validate(corrupted.clone(), &limits());
            if flips.len() == 1 && touched_crc_range {
                // CRC-32C catches every single-byte error.
                prop_assert!(result.is_err());
            }
            poke_everything(corrupted);
        }

        #[test]
        fn prop_flips_with_fixed_crc_never_panic(records in proptest::collection::vec(raw_record(), 1..5),
                                                 flips in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
                                                 cut in any::<prop::sample::Index>(),
                                                 truncate in any::<bool>()) {
            // Corrupt the records section but keep lengths and CRC right, so
            // the record walker sees the damage.
            let bytes = build(&records);
            let mut v = bytes.to_vec();
            let section = v.len() - RECORD_BATCH_OVERHEAD;
            for (idx, mask) in &flips {
                v[RECORD_BATCH_OVERHEAD + idx.index(section)] ^= mask;
            }
            if truncate {
                v.truncate(RECORD_BATCH_OVERHEAD + cut.index(section));
            }
            set_crc_and_lengths(&mut v);
            poke_everything(Bytes::from(v));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            poke_everything(Bytes::from(v));
        }

        #[test]
        fn prop_arbitrary_records_section_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            count in -2..6i32,
            attrs in any::<i16>(),
        ) {
            // A well-formed header with a correct CRC over random records,
            // so the record walker sees the garbage.
            let mut v = BatchBuilder::new().build().to_vec();
            v[21..23].copy_from_slice(&(attrs & 0x3f).to_be_bytes());
            set_i32(&mut v, 57, count);
            set_i32(&mut v, 23, count - 1);
            v.extend_from_slice(&tail);
            set_crc_and_lengths(&mut v);
            poke_everything(Bytes::from(v));
        }

        #[test]
        fn prop_varints_round_trip(a in any::<i32>(), b in any::<i64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, a);
            put_varlong(&mut out, b);
            let mut c = Cursor { buf: &out, pos: 0, end: out.len() };
            prop_assert_eq!(c.varint(), Ok(a));
            prop_assert_eq!(c.varlong(), Ok(b));
            prop_assert_eq!(c.pos, out.len());
        }
    }
}
