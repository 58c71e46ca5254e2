//! Kafka frames: a 4-byte big-endian length, then a request header and
//! body (decoded by `kafka-protocol`), or a response header and body.
//!
//! Frames longer than `kafka.max_frame_bytes` are refused before any of
//! their body is read, and a frame's buffer grows as its bytes arrive, so a
//! connection holds at most one frame of at most that size.
//!
//! A response is a [`Frame`] of pieces written one after the other: the
//! record batches of a Fetch response are pieces of their own, shared with
//! the batches as read from the log or the hot tier, not copied into the
//! encoded message (the response holds a short marker where each record
//! set goes, `kafka-protocol` encodes it, and [`encode`] splices the
//! batches in: [`RecordSets`]).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::versions;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// Its API.
    pub api_key: ApiKey,
    /// The version the client chose.
    pub version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client's `client.id`, for logs.
    pub client_id: Option<String>,
    /// The request itself.
    pub body: RequestKind,
}

/// Why a frame could not be decoded. Every one closes the connection,
/// except an ApiVersions request at a version we do not know, which gets
/// a v0 answer listing ours (KIP-511).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a request header's fixed part.
    #[error("frame of {0} bytes is shorter than a request header")]
    TooShort(usize),
    /// An API key Kafka does not define.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// An API this broker does not serve, or a version outside its range.
    #[error("{api_key:?} v{version} is not supported (this broker serves {range})")]
    Unsupported {
        /// The API.
        api_key: ApiKey,
        /// The version asked for.
        version: i16,
        /// Correlation id, for the ApiVersions answer.
        correlation_id: i32,
        /// What this broker serves, for the log line.
        range: String,
    },
    /// The header or body does not parse at its version.
    #[error("malformed {api_key:?} v{version} request: {error:#}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// Its version.
        version: i16,
        /// What the decoder said.
        error: anyhow::Error,
    },
}

/// Decodes one frame (without its length prefix).
pub fn decode(mut frame: Bytes) -> Result<Request, DecodeError> {
    // api key, version, correlation id.
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(key).map_err(|()| DecodeError::UnknownApiKey(key))?;
    match versions::supported(api_key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        served => {
            return Err(DecodeError::Unsupported {
                api_key,
                version,
                correlation_id,
                range: served.map_or_else(
                    || "no version of it".to_owned(),
                    |(min, max)| format!("versions {min} to {max}"),
                ),
            });
        }
    }
    let malformed = |error| DecodeError::Malformed {
        api_key,
        version,
        error,
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    Ok(Request {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
        body,
    })
}

/// An encoded response frame (length prefix included), in pieces to
/// write in order.
#[derive(Debug, Clone)]
pub struct Frame {
    pieces: Vec<Bytes>,
}

impl Frame {
    /// The pieces, in order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The frame in one buffer (a copy when it has several pieces).
    #[cfg(test)]
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [one] => one.clone(),
            pieces => pieces.concat().into(),
        }
    }
}

/// Record sets at least this long go by reference (see [`RecordSets`]);
/// shorter ones are copied into the message.
const BY_REFERENCE: usize = 16 * 1024;

/// The record sets a Fetch response carries by reference: the response
/// holds a short marker where each goes ([`RecordSets::stand_in`]) and
/// [`encode`] splices the batches in as pieces of the frame, so no record
/// byte is copied between the log (or the hot tier) and the socket.
#[derive(Debug, Default)]
pub struct RecordSets {
    /// Random per response, so no record bytes can pass for a marker.
    nonce: [u8; 16],
    sets: Vec<Vec<Bytes>>,
}

impl RecordSets {
    /// Record sets for one response.
    pub fn new() -> Self {
        Self {
            nonce: uuid::Uuid::new_v4().into_bytes(),
            sets: Vec::new(),
        }
    }

    /// What goes in a response's `records` for `batches`: few bytes are
    /// copied into one buffer; more are a marker for [`encode`].
    pub fn stand_in(&mut self, batches: Vec<Bytes>) -> Bytes {
        let total: usize = batches.iter().map(Bytes::len).sum();
        if total < BY_REFERENCE {
            return concat(batches);
        }
        self.sets.push(batches);
        self.marker(self.sets.len() - 1)
    }

    fn marker(&self, i: usize) -> Bytes {
        let mut m = BytesMut::with_capacity(20);
        m.extend_from_slice(&self.nonce);
        m.put_u32(i as u32);
        m.freeze()
    }

    /// `r` with the record sets in place of their markers (copied).
    fn restored(&self, r: &FetchResponse) -> FetchResponse {
        let mut r = r.clone();
        for p in r.responses.iter_mut().flat_map(|t| &mut t.partitions) {
            if let Some(i) = p.records.as_ref().and_then(|b| self.index_of(b)) {
                p.records = Some(concat(self.sets[i].clone()));
            }
        }
        r
    }

    fn index_of(&self, records: &[u8]) -> Option<usize> {
        let (nonce, i) = records.split_at_checked(16)?;
        (nonce == self.nonce && i.len() == 4)
            .then(|| u32::from_be_bytes([i[0], i[1], i[2], i[3]]) as usize)
            .filter(|i| *i < self.sets.len())
    }
}

/// `batches` as one byte string (no copy for a single batch).
fn concat(mut batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.pop().unwrap_or_default(),
        _ => batches.concat().into(),
    }
}

/// Encodes a response frame, length prefix included; a Fetch response's
/// `sets` are spliced in where their markers are.
pub fn encode(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    sets: &RecordSets,
) -> anyhow::Result<Frame> {
    let buf = encode_whole(api_key, version, correlation_id, body)?;
    let ResponseKind::Fetch(r) = body else {
        return Ok(Frame { pieces: vec![buf] });
    };
    match splice(buf, sets, version)? {
        Some(frame) => Ok(frame),
        // A marker is not where it must be (never seen): copy instead.
        None => {
            tracing::warn!("kafka: fetch response markers not found; sending a copy");
            let restored = ResponseKind::Fetch(sets.restored(r));
            let buf = encode_whole(api_key, version, correlation_id, &restored)?;
            Ok(Frame { pieces: vec![buf] })
        }
    }
}

/// The frame in one buffer.
fn encode_whole(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    // ApiVersions answers always use header v0, so that a client that
    // asked at a version we do not know can read them (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// `buf` (a Fetch response frame holding markers) with each marker and
/// its length replaced by its record set's length and batches; `None`
/// when a marker is missing.
fn splice(buf: Bytes, sets: &RecordSets, version: i16) -> anyhow::Result<Option<Frame>> {
    if sets.sets.is_empty() {
        return Ok(Some(Frame { pieces: vec![buf] }));
    }
    let length_of = |n: usize| -> anyhow::Result<BytesMut> {
        let mut b = BytesMut::with_capacity(5);
        if version >= 12 {
            // Compact bytes: unsigned varint of length + 1.
            let mut v = u32::try_from(n + 1)?;
            while v >= 0x80 {
                b.put_u8((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            b.put_u8(v as u8);
        } else {
            b.put_i32(i32::try_from(n)?);
        }
        Ok(b)
    };
    let marker_length = length_of(20)?;
    let batches: usize = sets.sets.iter().map(Vec::len).sum();
    let mut pieces = Vec::with_capacity(batches + sets.sets.len() + 1);
    let mut from = 0;
    for (i, set) in sets.sets.iter().enumerate() {
        let m = sets.marker(i);
        let Some(at) = buf[from..]
            .windows(m.len())
            .position(|w| w == m.as_ref())
            .map(|at| from + at)
        else {
            return Ok(None);
        };
        let Some(before) = at.checked_sub(marker_length.len()) else {
            return Ok(None);
        };
        if before < from || buf[before..at] != marker_length[..] {
            return Ok(None);
        }
        let total: usize = set.iter().map(Bytes::len).sum();
        let mut piece = BytesMut::with_capacity(before - from + 5);
        piece.extend_from_slice(&buf[from..before]);
        piece.extend_from_slice(&length_of(total)?);
        pieces.push(piece.freeze());
        pieces.extend(set.iter().cloned());
        from = at + m.len();
    }
    pieces.push(buf.slice(from..));
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let len = i32::try_from(total - 4)?;
    let mut first = BytesMut::from(pieces[0].as_ref());
    first[..4].copy_from_slice(&len.to_be_bytes());
    pieces[0] = first.freeze();
    Ok(Some(Frame { pieces }))
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or closed mid-frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A negative length.
    #[error("negative frame length {0}")]
    Negative(i32),
    /// A length over the limit.
    #[error("frame of {len} bytes exceeds kafka.max_frame_bytes ({limit})")]
    TooLarge {
        /// The length announced.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// Reads one frame; `None` when the peer closed the connection between
/// frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    let len = usize::try_from(len).map_err(|_| FrameError::Negative(len))?;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            limit: max_frame_bytes,
        });
    }
    // Grow with the bytes that arrive, not with the length announced.
    let mut buf = BytesMut::with_capacity(len.min(64 << 10));
    while buf.len() < len {
        buf.reserve((len - buf.len()).min(1 << 20));
        let want = len - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    use super::*;

    /// A Fetch response whose partitions hold records of `sizes` (each
    /// a list of batch sizes; `None`: no records field), as the fetch
    /// handler builds it (markers for large record sets), and the same
    /// response with the records in place.
    fn fetch_response(sizes: &[Option<Vec<usize>>]) -> (FetchResponse, RecordSets, FetchResponse) {
        let mut sets = RecordSets::new();
        let mut with_markers = Vec::new();
        let mut plain = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.high_watermark = 1000 + i as i64;
            let batches: Option<Vec<Bytes>> = size.as_ref().map(|batches| {
                batches
                    .iter()
                    .map(|n| Bytes::from((0..*n).map(|b| (b % 251) as u8).collect::<Vec<_>>()))
                    .collect()
            });
            let mut q = p.clone();
            q.records = batches.clone().map(|b| b.concat().into());
            p.records = batches.map(|b| sets.stand_in(b));
            with_markers.push(p);
            plain.push(q);
        }
        let response = |partitions| {
            let mut t = FetchableTopicResponse::default();
            t.topic = TopicName(StrBytes::from_static_str("orders"));
            t.partitions = partitions;
            let mut r = FetchResponse::default();
            r.responses = vec![t];
            r
        };
        (response(with_markers), sets, response(plain))
    }

    /// The plain encoding (one buffer, records copied).
    fn plain(correlation_id: i32, r: &FetchResponse, version: i16) -> Bytes {
        encode_whole(
            ApiKey::Fetch,
            version,
            correlation_id,
            &ResponseKind::Fetch(r.clone()),
        )
        .expect("encode")
    }

    #[test]
    fn fetch_batches_are_spliced_in_not_copied() {
        let sizes = [
            Some(vec![20_000]),
            Some(vec![100]),
            None,
            Some(vec![300_000, 70_000, 5]),
            Some(vec![]),
            Some(vec![BY_REFERENCE]),
        ];
        let (r, sets, expected) = fetch_response(&sizes);
        for version in [4, 11, 12, 13, 16] {
            let frame = encode(
                ApiKey::Fetch,
                version,
                7,
                &ResponseKind::Fetch(r.clone()),
                &sets,
            )
            .expect("encode");
            assert_eq!(
                frame.to_bytes(),
                plain(7, &expected, version),
                "v{version}: the same bytes as the plain encoding"
            );
            // Every batch of the three large record sets is a piece of
            // its own, shared with the batch.
            let shared = frame
                .pieces()
                .iter()
                .filter(|piece| {
                    sets.sets
                        .iter()
                        .flatten()
                        .any(|b| b.as_ptr() == piece.as_ptr() && b.len() == piece.len())
                })
                .count();
            assert_eq!(shared, 5, "v{version}");
            let mut body = frame.to_bytes().slice(4..);
            ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version))
                .expect("header");
            let back = FetchResponse::decode(&mut body, version).expect("decodes");
            assert_eq!(
                back.responses[0].partitions[3].records,
                expected.responses[0].partitions[3].records
            );
        }
        // Without a large record set: one piece, as before.
        let (small, sets, expected) = fetch_response(&[Some(vec![10, 20]), None]);
        let frame =
            encode(ApiKey::Fetch, 12, 1, &ResponseKind::Fetch(small), &sets).expect("encode");
        assert_eq!(frame.pieces().len(), 1);
        assert_eq!(frame.to_bytes(), plain(1, &expected, 12));
    }

    #[test]
    fn a_missing_marker_falls_back_to_a_copy() {
        let (mut r, sets, expected) = fetch_response(&[Some(vec![40_000]), Some(vec![64])]);
        // A record set that looks like a marker but is not where the
        // encoder put one: the response is still encoded right.
        r.responses[0].partitions[0].records = Some(sets.marker(0));
        r.responses[0].partitions[1].records = expected.responses[0].partitions[1].records.clone();
        let mut other = RecordSets::new();
        other.sets = sets.sets.clone();
        let frame = encode(
            ApiKey::Fetch,
            12,
            3,
            &ResponseKind::Fetch(r.clone()),
            &other,
        )
        .expect("encode");
        assert_eq!(
            frame.to_bytes(),
            plain(3, &r, 12),
            "markers of another response are data"
        );
        let frame = encode(ApiKey::Fetch, 12, 3, &ResponseKind::Fetch(r), &sets).expect("encode");
        assert_eq!(frame.to_bytes(), plain(3, &expected, 12));
    }

    proptest! {
        /// Random bytes never panic the frame reader or the decoder, and
        /// the reader never returns more than the limit.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let mut rd: &[u8] = &bytes;
            while let Ok(Some(frame)) = rt.block_on(read_frame(&mut rd, 256)) {
                prop_assert!(frame.len() <= 256);
                let _ = decode(frame);
            }
            let _ = decode(Bytes::from(bytes));
        }

        /// A valid header of a served API followed by random bytes decodes
        /// or fails cleanly (forged lengths included).
        #[test]
        fn served_apis_with_random_bodies_never_panic(
            api in prop::sample::select(vec![0i16, 1, 2, 3, 10, 18, 19, 22]),
            version in 0i16..14,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut frame = BytesMut::new();
            frame.put_i16(api);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_i16(-1);
            frame.extend_from_slice(&body);
            let _ = decode(frame.freeze());
        }
    }
}
