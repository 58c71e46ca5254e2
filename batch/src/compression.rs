//! zstd and lz4 compression of a batch's records section (feature
//! `compression`), for producers that build compressed batches and consumers
//! that read them. The broker never decompresses, so it leaves this off.
//!
//! Only the records section (everything after the 61-byte header) is
//! compressed, as in Kafka; the header stays readable, and the CRC is computed
//! over the final, compressed bytes. lz4 uses the LZ4 *frame* format with
//! independent blocks, which is what Kafka's `KafkaLZ4BlockOutputStream`
//! writes and reads. gzip and snappy are recognised but not supported:
//! [`BatchError::CompressionNotSupported`].
//!
//! The one thing a newcomer must not break: decompression is bounded by
//! [`MAX_DECOMPRESSED_BYTES`], so a small malicious batch cannot make a
//! reader allocate gigabytes.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::{
    ATTRIBUTES_AT, Batch, BatchBuilder, BatchError, COMPRESSION_MASK, Compression,
    RECORD_BATCH_OVERHEAD, Record, decode_records, set_crc_and_lengths,
};

/// Largest decompressed records section [`decode_records_any`] accepts
/// (64 MiB); a bigger one is reported as [`BatchError::Decompression`].
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// zstd level used by [`BatchBuilder::build_compressed`]: Kafka's default (3).
const ZSTD_LEVEL: i32 = 3;

impl BatchBuilder {
    /// Encodes the batch with its records section compressed with
    /// `compression` (and the attribute bits set), CRC over the final bytes.
    /// [`Compression::None`] is the same as [`BatchBuilder::build`]; gzip and
    /// snappy give [`BatchError::CompressionNotSupported`].
    ///
    /// Costs a compression pass over the records: call it off the async
    /// runtime for big batches.
    pub fn build_compressed(&self, compression: Compression) -> Result<Bytes, BatchError> {
        let payload = match compression {
            Compression::None => return Ok(self.build()),
            Compression::Zstd => zstd::bulk::compress(&self.records, ZSTD_LEVEL)
                .map_err(|e| BatchError::Decompression(format!("zstd compression failed: {e}")))?,
            Compression::Lz4 => lz4_compress(&self.records)?,
            Compression::Gzip | Compression::Snappy => {
                return Err(BatchError::CompressionNotSupported(compression.id()));
            }
        };
        Ok(self.assemble(compression, &payload))
    }
}

fn lz4_compress(records: &[u8]) -> Result<Vec<u8>, BatchError> {
    let info = lz4_flex::frame::FrameInfo::new()
        .block_mode(lz4_flex::frame::BlockMode::Independent)
        .block_size(lz4_flex::frame::BlockSize::Max64KB);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    let fail = |e: &dyn std::fmt::Display| BatchError::Decompression(format!("lz4 failed: {e}"));
    enc.write_all(records).map_err(|e| fail(&e))?;
    enc.finish().map_err(|e| fail(&e))
}

/// Reads `reader` to the end, failing when it yields more than
/// [`MAX_DECOMPRESSED_BYTES`].
fn read_bounded(reader: impl Read, codec: &str) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let limit = u64::try_from(MAX_DECOMPRESSED_BYTES).unwrap_or(u64::MAX);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Decompression(format!("{codec}: {e}")))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(BatchError::Decompression(format!(
            "{codec}: records section decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Decodes the records of any batch this client supports: uncompressed
/// (exactly [`decode_records`]), zstd or lz4. gzip and snappy give
/// [`BatchError::CompressionNotSupported`]; a corrupt compressed section,
/// [`BatchError::Decompression`]. For compressed batches the keys and values
/// are slices of one decompressed buffer. Never panics, whatever the input.
pub fn decode_records_any(batch: &Batch) -> Result<Vec<Record>, BatchError> {
    let compression = batch.header().compression()?;
    let section = batch
        .bytes()
        .get(RECORD_BATCH_OVERHEAD..)
        .unwrap_or_default();
    let records = match compression {
        Compression::None => return decode_records(batch),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(section)
                .map_err(|e| BatchError::Decompression(format!("zstd: {e}")))?;
            read_bounded(decoder, "zstd")?
        }
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(section), "lz4")?,
        Compression::Gzip | Compression::Snappy => {
            return Err(BatchError::CompressionNotSupported(compression.id()));
        }
    };
    // Rebuild the batch uncompressed (same header, codec bits cleared) and
    // decode that: one record walker for every codec.
    let header = batch
        .bytes()
        .get(..RECORD_BATCH_OVERHEAD)
        .ok_or(BatchError::TooShort {
            len: batch.bytes().len(),
        })?;
    let mut plain = Vec::with_capacity(RECORD_BATCH_OVERHEAD + records.len());
    plain.extend_from_slice(header);
    let attributes = batch.header().attributes & !COMPRESSION_MASK;
    if let Some(at) = plain.get_mut(ATTRIBUTES_AT..ATTRIBUTES_AT + 2) {
        at.copy_from_slice(&attributes.to_be_bytes());
    }
    plain.extend_from_slice(&records);
    set_crc_and_lengths(&mut plain);
    decode_records(&Batch::from_trusted(Bytes::from(plain))?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::BatchLimits;

    fn sample(n: usize) -> BatchBuilder {
        let mut b = BatchBuilder::new().producer(7, 1, 42);
        for i in 0..n {
            let key = format!("key-{i}");
            let value = format!("value {i} {}", "x".repeat(i % 50));
            b.push(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                if i % 7 == 3 {
                    None
                } else {
                    Some(value.as_bytes())
                },
                &[("h", Some(b"v")), ("null", None)],
            );
        }
        b
    }

    #[test]
    fn zstd_and_lz4_round_trip_and_validate() {
        for n in [1, 10, 2000] {
            let b = sample(n);
            let plain = Batch::validate(b.build(), &BatchLimits::default()).unwrap();
            let want = decode_records(&plain).unwrap();
            for codec in [Compression::None, Compression::Zstd, Compression::Lz4] {
                let bytes = b.build_compressed(codec).unwrap();
                let batch = Batch::validate(bytes, &BatchLimits::default()).unwrap();
                batch.verify_crc().unwrap();
                assert_eq!(batch.header().compression().unwrap(), codec);
                assert_eq!(batch.record_count() as usize, n);
                assert_eq!(batch.header().base_sequence, 42);
                assert_eq!(batch.header().producer_id, 7);
                if codec != Compression::None && n > 100 {
                    assert!(batch.len() < plain.len() / 2, "{codec:?} did not compress");
                }
                // Stamped like the broker does, then decoded.
                let stamped = batch.stamp(1000, 3);
                let got = decode_records_any(&stamped).unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.offset, w.offset + 1000);
                    assert_eq!(
                        (&g.key, &g.value, &g.headers, g.timestamp),
                        (&w.key, &w.value, &w.headers, w.timestamp)
                    );
                }
            }
        }
    }

    #[test]
    fn lz4_is_a_standard_frame() {
        let b = sample(5);
        let bytes = b.build_compressed(Compression::Lz4).unwrap();
        // LZ4 frame magic 0x184D2204, little-endian, right after the header.
        assert_eq!(
            &bytes[RECORD_BATCH_OVERHEAD..RECORD_BATCH_OVERHEAD + 4],
            &[0x04, 0x22, 0x4d, 0x18]
        );
        let zstd = b.build_compressed(Compression::Zstd).unwrap();
        assert_eq!(
            &zstd[RECORD_BATCH_OVERHEAD..RECORD_BATCH_OVERHEAD + 4],
            &[0x28, 0xb5, 0x2f, 0xfd]
        );
    }

    #[test]
    fn gzip_and_snappy_are_refused_clearly() {
        let b = sample(3);
        for codec in [Compression::Gzip, Compression::Snappy] {
            let err = b.build_compressed(codec).unwrap_err();
            assert_eq!(err, BatchError::CompressionNotSupported(codec.id()));
            assert!(err.to_string().contains("not supported by this client"));
            let bytes = b.build_with_compression_bits(Bytes::from_static(b"junk"), codec);
            let batch = Batch::validate(bytes, &BatchLimits::default()).unwrap();
            assert_eq!(
                decode_records_any(&batch).unwrap_err(),
                BatchError::CompressionNotSupported(codec.id())
            );
        }
    }

    #[test]
    fn corrupt_payload_is_an_error_not_a_panic() {
        let b = sample(3);
        for codec in [Compression::Zstd, Compression::Lz4] {
            let bytes = b.build_with_compression_bits(Bytes::from_static(b"not compressed"), codec);
            let batch = Batch::validate(bytes, &BatchLimits::default()).unwrap();
            assert!(matches!(
                decode_records_any(&batch),
                Err(BatchError::Decompression(_))
            ));
            // Valid compression of garbage records.
            let junk = zstd::bulk::compress(b"\x05garbage", 3).unwrap();
            let bytes = b.build_with_compression_bits(Bytes::from(junk), Compression::Zstd);
            let batch = Batch::validate(bytes, &BatchLimits::default()).unwrap();
            assert!(matches!(
                decode_records_any(&batch),
                Err(BatchError::MalformedRecord(_))
            ));
        }
    }
}
