//! Kafka's four codecs for a batch's records section (feature
//! `compression`): producers build compressed batches, consumers decode
//! them, and the broker decompresses them (bounded) to validate them.
//!
//! Only the records section (everything after the 61-byte header) is
//! compressed, as in Kafka; the header stays readable, and the CRC is computed
//! over the final, compressed bytes. Formats, as Kafka clients write them:
//! - gzip: a gzip member (RFC 1952);
//! - snappy: the xerial framing that the Java client writes (a 16-byte
//!   header, then blocks of a 4-byte big-endian length and a raw snappy
//!   block); a section without that header is read as one raw snappy block,
//!   as some clients write it;
//! - lz4: the LZ4 *frame* format with independent blocks, which is what
//!   Kafka's `KafkaLZ4BlockOutputStream` writes and reads;
//! - zstd: a zstd frame.
//!
//! The one thing a newcomer must not break: decompression is bounded by a
//! limit ([`MAX_DECOMPRESSED_BYTES`] at most), so a small malicious batch
//! (a decompression bomb) cannot make a reader allocate gigabytes.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::{
    ATTRIBUTES_AT, Batch, BatchBuilder, BatchError, COMPRESSION_MASK, Compression,
    RECORD_BATCH_OVERHEAD, Record, decode_records, set_crc_and_lengths,
};

/// Largest decompressed records section accepted (64 MiB); a bigger one
/// is reported as [`BatchError::Decompression`].
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// zstd level used by [`BatchBuilder::build_compressed`]: Kafka's default (3).
const ZSTD_LEVEL: i32 = 3;

/// The xerial snappy framing's header: magic, version 1, compatible 1.
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];

/// Uncompressed bytes per xerial snappy block (the Java library's default).
const XERIAL_BLOCK: usize = 32 * 1024;

impl BatchBuilder {
    /// Encodes the batch with its records section compressed with
    /// `compression` (and the attribute bits set), CRC over the final bytes.
    /// [`Compression::None`] is the same as [`BatchBuilder::build`].
    ///
    /// Costs a compression pass over the records: call it off the async
    /// runtime for big batches.
    pub fn build_compressed(&self, compression: Compression) -> Result<Bytes, BatchError> {
        let payload = compress(compression, &self.records)?;
        Ok(match payload {
            None => self.build(),
            Some(p) => self.assemble(compression, &p),
        })
    }
}

fn fail(codec: &str, e: &dyn std::fmt::Display) -> BatchError {
    BatchError::Decompression(format!("{codec} compression failed: {e}"))
}

/// The compressed form of `records`; `None` for [`Compression::None`].
fn compress(compression: Compression, records: &[u8]) -> Result<Option<Vec<u8>>, BatchError> {
    Ok(Some(match compression {
        Compression::None => return Ok(None),
        Compression::Zstd => {
            zstd::bulk::compress(records, ZSTD_LEVEL).map_err(|e| fail("zstd", &e))?
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(records).map_err(|e| fail("lz4", &e))?;
            enc.finish().map_err(|e| fail("lz4", &e))?
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(records).map_err(|e| fail("gzip", &e))?;
            enc.finish().map_err(|e| fail("gzip", &e))?
        }
        Compression::Snappy => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|e| fail("snappy", &e))?;
                let len = u32::try_from(compressed.len()).map_err(|e| fail("snappy", &e))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
    }))
}

/// Reads `reader` to the end, failing when it yields more than `limit`.
fn read_bounded(reader: impl Read, codec: &str, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX);
    reader
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Decompression(format!("{codec}: {e}")))?;
    if out.len() > limit {
        return Err(too_large(codec, limit));
    }
    Ok(out)
}

fn too_large(codec: &str, limit: usize) -> BatchError {
    BatchError::Decompression(format!(
        "{codec}: records section decompresses to more than {limit} bytes"
    ))
}

/// One raw snappy block, refused before allocating when its declared
/// length would take the output over `limit`.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
    let corrupt = |e: &dyn std::fmt::Display| BatchError::Decompression(format!("snappy: {e}"));
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(&e))?;
    if out.len().saturating_add(len) > limit {
        return Err(too_large("snappy", limit));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(&e))?;
    Ok(())
}

fn snappy_decompress(section: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let Some(mut blocks) = section.strip_prefix(&XERIAL_HEADER[..8]) else {
        snappy_block(section, &mut out, limit)?;
        return Ok(out);
    };
    // Version and compatible version (8 bytes), then the blocks.
    blocks = blocks
        .get(8..)
        .ok_or_else(|| BatchError::Decompression("snappy: truncated xerial header".into()))?;
    while !blocks.is_empty() {
        let (len, rest) = blocks.split_at_checked(4).ok_or_else(|| {
            BatchError::Decompression("snappy: truncated xerial block length".into())
        })?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (block, rest) = rest.split_at_checked(len).ok_or_else(|| {
            BatchError::Decompression(format!(
                "snappy: xerial block of {len} bytes runs past the section"
            ))
        })?;
        snappy_block(block, &mut out, limit)?;
        blocks = rest;
    }
    Ok(out)
}

/// Decompresses a compressed records section, refusing more than `limit`
/// bytes of output (at most [`MAX_DECOMPRESSED_BYTES`]). Never panics,
/// whatever the input.
pub(crate) fn decompress(
    compression: Compression,
    section: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    let limit = limit.min(MAX_DECOMPRESSED_BYTES);
    match compression {
        Compression::None => Ok(section.to_vec()),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(section)
                .map_err(|e| BatchError::Decompression(format!("zstd: {e}")))?;
            read_bounded(decoder, "zstd", limit)
        }
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(section), "lz4", limit),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(section), "gzip", limit),
        Compression::Snappy => snappy_decompress(section, limit),
    }
}

/// Decodes the records of any batch: uncompressed (exactly
/// [`decode_records`]) or compressed with any of Kafka's codecs. A corrupt
/// compressed section, or one over [`MAX_DECOMPRESSED_BYTES`], gives
/// [`BatchError::Decompression`]. For compressed batches the keys and
/// values are slices of one decompressed buffer. Never panics, whatever
/// the input.
pub fn decode_records_any(batch: &Batch) -> Result<Vec<Record>, BatchError> {
    let compression = batch.header().compression()?;
    if compression == Compression::None {
        return decode_records(batch);
    }
    let section = batch
        .bytes()
        .get(RECORD_BATCH_OVERHEAD..)
        .unwrap_or_default();
    let records = decompress(compression, section, MAX_DECOMPRESSED_BYTES)?;
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
    fn every_codec_round_trips_and_validates() {
        for n in [1, 10, 2000] {
            let b = sample(n);
            let plain = Batch::validate(b.build(), &BatchLimits::default()).unwrap();
            let want = decode_records(&plain).unwrap();
            for codec in [
                Compression::None,
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
                Compression::Zstd,
            ] {
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
    fn gzip_and_snappy_use_the_formats_kafka_clients_write() {
        let b = sample(2000);
        let gzip = b.build_compressed(Compression::Gzip).unwrap();
        assert_eq!(
            &gzip[RECORD_BATCH_OVERHEAD..RECORD_BATCH_OVERHEAD + 2],
            &[0x1f, 0x8b]
        );
        let snappy = b.build_compressed(Compression::Snappy).unwrap();
        assert_eq!(
            &snappy[RECORD_BATCH_OVERHEAD..RECORD_BATCH_OVERHEAD + 16],
            &XERIAL_HEADER
        );
        // Several xerial blocks for a big section.
        assert!(b.records.len() > 2 * XERIAL_BLOCK);
        // An unframed raw snappy section (as some clients write it) reads too.
        let raw = snap::raw::Encoder::new().compress_vec(&b.records).unwrap();
        let bytes = b.build_with_compression_bits(Bytes::from(raw), Compression::Snappy);
        let batch = Batch::validate(bytes, &BatchLimits::default()).unwrap();
        assert_eq!(decode_records_any(&batch).unwrap().len(), 2000);
    }

    #[test]
    fn a_decompression_bomb_is_refused_on_validation() {
        // 8 MiB of one repeated record value compresses to a few KiB.
        let mut b = BatchBuilder::new();
        let value = vec![b'x'; 1024];
        for i in 0..8 * 1024 {
            b.push(i, None, Some(&value), &[]);
        }
        let limits = BatchLimits {
            max_decompressed_bytes: 1 << 20,
            ..BatchLimits::default()
        };
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = b.build_compressed(codec).unwrap();
            assert!(bytes.len() < limits.max_batch_bytes, "{codec:?}");
            let err = Batch::validate(bytes.clone(), &limits).unwrap_err();
            assert!(
                matches!(&err, BatchError::Decompression(m) if m.contains("more than 1048576 bytes")),
                "{codec:?}: {err}"
            );
            assert!(Batch::validate(bytes, &BatchLimits::default()).is_ok());
        }
    }

    #[test]
    fn corrupt_payload_is_an_error_not_a_panic() {
        let b = sample(3);
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = b.build_with_compression_bits(Bytes::from_static(b"not compressed"), codec);
            assert!(
                matches!(
                    Batch::validate(bytes, &BatchLimits::default()),
                    Err(BatchError::Decompression(_))
                ),
                "{codec:?}"
            );
            // Valid compression of garbage records: refused on validation,
            // and reported (not a panic) by a reader that skips it.
            let junk = compress(codec, b"\x05garbage").unwrap().unwrap();
            let bytes = b.build_with_compression_bits(Bytes::from(junk), codec);
            assert!(matches!(
                Batch::validate(bytes.clone(), &BatchLimits::default()),
                Err(BatchError::MalformedRecord(_))
            ));
            let batch = Batch::from_trusted(bytes).unwrap();
            assert!(matches!(
                decode_records_any(&batch),
                Err(BatchError::MalformedRecord(_))
            ));
        }
    }
}
