//! Kafka frames: a 4-byte big-endian length, then a request header and
//! body (decoded by `kafka-protocol`), or a response header and body.
//!
//! Frames longer than `kafka.max_frame_bytes` are refused before any of
//! their body is read, and a frame's buffer grows as its bytes arrive, so a
//! connection holds at most one frame of at most that size.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
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

/// Encodes a response frame, length prefix included.
pub fn encode(
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
    use proptest::prelude::*;

    use super::*;

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
