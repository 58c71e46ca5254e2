//! The broker-wide write-ahead log (DESIGN §4, §6): one object per flush
//! carries the appended batches of every partition a broker incarnation
//! owns, so the PUT count follows the flush rate, not the partition count.
//!
//! - [`format`]: the object layout.
//! - [`writer`]: group commit, ordered acknowledgement, fencing detection.
//! - [`reader`]: fencing another incarnation and replaying its chunks.
//! - [`tails`]: WAL object tails shared by the replays of one takeover.
//!
//! Invariant: an entry is reported durable only when its object and every
//! object with a lower sequence are written. A writer whose create-only PUT
//! finds a foreign object is fenced: it fails everything pending and accepts
//! nothing more.

pub mod format;
pub mod reader;
pub mod tails;
pub mod writer;

pub use reader::{WalObject, fence, list_from, own_objects, read_partition};
pub use writer::{
    DEFAULT_MIN_INTERVAL, MIN_INTERVAL_PAID_STORE, WalConfig, WalEntry, WalPermit, WalSink,
    WalWriter,
};

#[cfg(test)]
mod tests;
