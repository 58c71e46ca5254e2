//! Rust client for Strata (skeleton).
