//! The WAL object format (DESIGN §4).
//!
//! ```text
//! header    32 B  magic "STRATAWL", version u16, kind u16 (0 data, 1 tombstone),
//!                 reserved u32, write_id u64, seq u64
//! chunks          per partition: its batches, exactly as stored, concatenated
//! directory       per chunk: topic_id [16], topic_len u16, topic, partition u32, leader_epoch i32,
//!                 first_offset i64, last_offset i64, pos u64, len u32, crc32c u32
//! footer    32 B  dir_pos u64, dir_len u32, chunk_count u32, dir_crc u32,
//!                 reserved u32, magic "STRWALFT"
//! ```
//! All integers big-endian. A tombstone is a lone header (32 bytes), so a
//! LIST tells tombstones from data objects by size alone. `write_id` is
//! random per object: after an ambiguous PUT the writer recognises its own
//! object by it. A reader fetches the footer and directory with one ranged
//! GET and then only the chunks it needs.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::keys::{TopicId, TopicIdPartition, TopicName, TopicPartition, WalSeq};

/// Size of the header (and of a whole tombstone object).
pub const HEADER_LEN: usize = 32;
/// Size of the footer.
pub const FOOTER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"STRATAWL";
const FOOTER_MAGIC: &[u8; 8] = b"STRWALFT";
/// 2: chunks name their topic's id (1, before topic ids, is refused).
const VERSION: u16 = 2;
const KIND_DATA: u16 = 0;
const KIND_TOMBSTONE: u16 = 1;

/// The decoded header of a WAL object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    /// True for a fencing tombstone.
    pub tombstone: bool,
    /// Random identity of this object's write.
    pub write_id: u64,
    /// The sequence number the writer meant it for.
    pub seq: WalSeq,
}

/// Encodes a header.
pub fn encode_header(tombstone: bool, write_id: u64, seq: WalSeq) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN);
    b.put_slice(MAGIC);
    b.put_u16(VERSION);
    b.put_u16(if tombstone { KIND_TOMBSTONE } else { KIND_DATA });
    b.put_u32(0);
    b.put_u64(write_id);
    b.put_u64(seq.0);
    b.freeze()
}

/// Decodes a header from the first bytes of an object.
pub fn decode_header(key: &str, buf: &[u8]) -> Result<WalHeader> {
    if buf.len() < HEADER_LEN || &buf[..8] != MAGIC {
        return Err(Error::corrupt(key, "not a WAL object (bad header magic)"));
    }
    let version = u16::from_be_bytes([buf[8], buf[9]]);
    if version != VERSION {
        return Err(Error::corrupt(
            key,
            format!(
                "unsupported WAL version {version} (this broker reads version {VERSION}); the bucket was written by another Strata release"
            ),
        ));
    }
    let kind = u16::from_be_bytes([buf[10], buf[11]]);
    Ok(WalHeader {
        tombstone: kind == KIND_TOMBSTONE,
        write_id: be_u64(&buf[16..24]),
        seq: WalSeq(be_u64(&buf[24..32])),
    })
}

/// One partition's chunk, as listed in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    /// The partition (of one incarnation of its topic).
    pub partition: TopicIdPartition,
    /// The leader epoch the batches were written under.
    pub leader_epoch: i32,
    /// Offset of the first record in the chunk.
    pub first_offset: i64,
    /// Offset of the last record in the chunk.
    pub last_offset: i64,
    /// Byte position of the chunk in the object.
    pub pos: u64,
    /// Chunk length in bytes.
    pub len: u32,
    /// CRC-32C of the chunk bytes.
    pub crc: u32,
}

/// Builds the directory and footer for chunks laid out after the header.
pub fn encode_trailer(chunks: &[ChunkEntry]) -> Bytes {
    let dir_pos = chunks
        .last()
        .map_or(HEADER_LEN as u64, |c| c.pos + u64::from(c.len));
    let mut b = BytesMut::with_capacity(chunks.len() * 64 + FOOTER_LEN);
    for c in chunks {
        let topic = c.partition.tp.topic.as_str().as_bytes();
        b.put_slice(c.partition.topic_id.as_bytes());
        b.put_u16(topic.len() as u16);
        b.put_slice(topic);
        b.put_u32(c.partition.tp.partition);
        b.put_i32(c.leader_epoch);
        b.put_i64(c.first_offset);
        b.put_i64(c.last_offset);
        b.put_u64(c.pos);
        b.put_u32(c.len);
        b.put_u32(c.crc);
    }
    let dir_len = b.len();
    let dir_crc = crc32c::crc32c(&b);
    b.put_u64(dir_pos);
    b.put_u32(dir_len as u32);
    b.put_u32(chunks.len() as u32);
    b.put_u32(dir_crc);
    b.put_u32(0);
    b.put_slice(FOOTER_MAGIC);
    b.freeze()
}

/// Where the directory lies, from the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Byte position of the directory.
    pub dir_pos: u64,
    /// Directory length.
    pub dir_len: u32,
    /// Number of chunks.
    pub chunk_count: u32,
    /// CRC-32C of the directory.
    pub dir_crc: u32,
}

/// Decodes the footer from the last [`FOOTER_LEN`] bytes of an object of `size` bytes.
pub fn decode_footer(key: &str, buf: &[u8], size: u64) -> Result<Footer> {
    if buf.len() != FOOTER_LEN || &buf[24..32] != FOOTER_MAGIC {
        return Err(Error::corrupt(key, "bad WAL footer magic"));
    }
    let f = Footer {
        dir_pos: be_u64(&buf[0..8]),
        dir_len: be_u32(&buf[8..12]),
        chunk_count: be_u32(&buf[12..16]),
        dir_crc: be_u32(&buf[16..20]),
    };
    let end = f
        .dir_pos
        .checked_add(u64::from(f.dir_len))
        .and_then(|e| e.checked_add(FOOTER_LEN as u64));
    if end != Some(size) {
        return Err(Error::corrupt(
            key,
            "WAL footer does not match the object size",
        ));
    }
    Ok(f)
}

/// Decodes and checks the directory.
pub fn decode_directory(key: &str, buf: &[u8], footer: &Footer) -> Result<Vec<ChunkEntry>> {
    if buf.len() != footer.dir_len as usize || crc32c::crc32c(buf) != footer.dir_crc {
        return Err(Error::corrupt(key, "WAL directory checksum mismatch"));
    }
    // The count is not covered by the directory's CRC: never trust it for
    // an allocation beyond what the directory can hold (46 bytes a chunk
    // at least).
    let mut out = Vec::with_capacity((footer.chunk_count as usize).min(buf.len() / 46));
    let mut p = 0usize;
    let short = || Error::corrupt(key, "truncated WAL directory");
    for _ in 0..footer.chunk_count {
        let id: [u8; 16] = buf
            .get(p..p + 16)
            .ok_or_else(short)?
            .try_into()
            .map_err(|_| short())?;
        p += 16;
        let tl = usize::from(u16::from_be_bytes(
            buf.get(p..p + 2)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?,
        ));
        p += 2;
        let topic = std::str::from_utf8(buf.get(p..p + tl).ok_or_else(short)?)
            .map_err(|_| Error::corrupt(key, "topic name is not UTF-8"))?;
        let topic = TopicName::new(topic)?;
        p += tl;
        let rest = buf.get(p..p + 40).ok_or_else(short)?;
        out.push(ChunkEntry {
            partition: TopicIdPartition {
                topic_id: TopicId(uuid::Uuid::from_bytes(id)),
                tp: TopicPartition {
                    topic,
                    partition: be_u32(&rest[0..4]),
                },
            },
            leader_epoch: be_u32(&rest[4..8]) as i32,
            first_offset: be_u64(&rest[8..16]) as i64,
            last_offset: be_u64(&rest[16..24]) as i64,
            pos: be_u64(&rest[24..32]),
            len: be_u32(&rest[32..36]),
            crc: be_u32(&rest[36..40]),
        });
        p += 40;
    }
    if p != buf.len() {
        return Err(Error::corrupt(key, "trailing bytes in WAL directory"));
    }
    Ok(out)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_and_trailer_round_trip() {
        let h = encode_header(false, 77, WalSeq(5));
        assert_eq!(h.len(), HEADER_LEN);
        let d = decode_header("k", &h).unwrap();
        assert_eq!(
            d,
            WalHeader {
                tombstone: false,
                write_id: 77,
                seq: WalSeq(5)
            }
        );
        let chunks = vec![
            ChunkEntry {
                partition: TopicIdPartition::new(
                    TopicId::random(),
                    TopicPartition::new("a", 1).unwrap(),
                ),
                leader_epoch: 3,
                first_offset: 10,
                last_offset: 19,
                pos: 32,
                len: 100,
                crc: 9,
            },
            ChunkEntry {
                partition: TopicIdPartition::new(
                    TopicId::random(),
                    TopicPartition::new("bb", 0).unwrap(),
                ),
                leader_epoch: 1,
                first_offset: 0,
                last_offset: 0,
                pos: 132,
                len: 70,
                crc: 1,
            },
        ];
        let t = encode_trailer(&chunks);
        let size = 202 + t.len() as u64;
        let mut v1 = h.to_vec();
        v1[9] = 1;
        let err = decode_header("k", &v1).unwrap_err().to_string();
        assert!(err.contains("unsupported WAL version 1"), "{err}");
        let f = decode_footer("k", &t[t.len() - FOOTER_LEN..], size).unwrap();
        assert_eq!(f.dir_pos, 202);
        let dir = decode_directory("k", &t[..f.dir_len as usize], &f).unwrap();
        assert_eq!(dir, chunks);
        let mut bad = t.to_vec();
        bad[3] ^= 1;
        assert!(decode_directory("k", &bad[..f.dir_len as usize], &f).is_err());
        // A footer whose directory position overflows is corrupt, not a panic.
        let mut footer = t[t.len() - FOOTER_LEN..].to_vec();
        footer[0..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_footer("k", &footer, size).is_err());
    }
}
