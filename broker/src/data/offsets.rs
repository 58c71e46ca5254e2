//! Offsets of a partition: earliest, latest, or the first at a time.

use crate::error::{BrokerError, Result};
use crate::service::Shared;

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log.
    Earliest,
    /// The high watermark (the next offset to be written).
    Latest,
    /// The first offset whose timestamp is at or after this (ms); the high
    /// watermark when there is none.
    Timestamp(i64),
}

/// An answer to [`list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The offset asked for.
    pub offset: i64,
    /// The partition's first offset.
    pub log_start_offset: i64,
    /// Its high watermark.
    pub high_watermark: i64,
}

/// Looks up `spec` in `topic`/`partition`, which this broker must own.
pub async fn list(
    shared: &Shared,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Result<Listed> {
    let (tp, log) = shared.partition(topic, partition).await?;
    let status = log.status();
    let offset = match spec {
        OffsetSpec::Earliest => status.log_start_offset,
        OffsetSpec::Latest => status.high_watermark,
        OffsetSpec::Timestamp(ts) => log
            .offset_for_timestamp(ts)
            .await
            .map_err(|e| BrokerError::storage(&tp, e))?
            .unwrap_or(status.high_watermark),
    };
    Ok(Listed {
        offset,
        log_start_offset: status.log_start_offset,
        high_watermark: status.high_watermark,
    })
}
