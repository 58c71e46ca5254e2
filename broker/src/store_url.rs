//! Turns the `store` setting (a URL) into an `object_store::ObjectStore`.
//!
//! Supported schemes:
//! - `file:///abs/path` or `file://relative/path`: a local directory
//!   (created if missing). The embedded default.
//! - `memory://`: in-process memory; not shared between processes and lost
//!   on exit (tests and demos only).
//! - `s3://bucket[/prefix]`: S3 or an S3-compatible server. Endpoint,
//!   region and credentials come from the usual `AWS_*` variables
//!   (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_REGION`,
//!   `AWS_ACCESS_KEY_ID`, ...). With an endpoint set (MinIO and friends),
//!   requests are path-style unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` says
//!   otherwise; the region defaults to `us-east-1`.
//!
//! Whether the store enforces create-only writes is checked later, by the
//! storage engine's self-test when it opens.

use std::sync::Arc;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use strata_storage::store::{FaultConfig, FaultRule, FaultStore, OpSet};

use crate::config::StoreLatencyConfig;

/// The schemes [`open`] understands, for error messages.
pub const SUPPORTED: &str = "file:///abs/path, file://relative/path, memory://, s3://bucket/prefix";

/// `store` with every request delayed per `latency` (benchmarks only: see
/// [`StoreLatencyConfig`]); `store` itself when it is off.
pub fn with_latency(
    store: Arc<dyn ObjectStore>,
    latency: &StoreLatencyConfig,
) -> Arc<dyn ObjectStore> {
    if !latency.is_on() {
        return store;
    }
    tracing::warn!(
        min = %humantime::format_duration(latency.min),
        max = %humantime::format_duration(latency.max),
        spike_rate = latency.spike_rate,
        spike = %humantime::format_duration(latency.spike),
        "store_latency is set: every store request is delayed (a benchmark setting, not for production)"
    );
    Arc::new(FaultStore::new(
        store,
        FaultConfig {
            seed: rand::random(),
            rules: vec![
                FaultRule::latency(OpSet::ALL, latency.min, latency.max)
                    .with_spikes(latency.spike_rate, latency.spike),
            ],
        },
    ))
}

/// Opens the store `url` names.
pub fn open(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("store URL {url:?} has no scheme; use one of: {SUPPORTED}");
    };
    match scheme {
        "file" => open_file(rest),
        "memory" => {
            if !rest.is_empty() {
                bail!("a memory:// store takes no path, got {url:?}");
            }
            tracing::warn!(
                "store memory:// is not shared between processes and everything in it is lost on exit"
            );
            Ok(Arc::new(InMemory::new()))
        }
        "s3" | "s3a" => open_s3(rest, |key| std::env::var(key).ok()),
        other => bail!("unsupported store scheme {other:?} in {url:?}; use one of: {SUPPORTED}"),
    }
}

fn open_file(path: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if path.is_empty() {
        bail!(
            "a file:// store needs a directory, e.g. file:///var/lib/strata or file://strata-data"
        );
    }
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create the store directory {path}"))?;
    let fs = LocalFileSystem::new_with_prefix(path)
        .with_context(|| format!("cannot open the store directory {path}"))?
        .with_automatic_cleanup(true);
    Ok(Arc::new(fs))
}

/// The parts of an `s3://bucket/prefix` URL.
fn split_bucket(rest: &str) -> anyhow::Result<(&str, Option<&str>)> {
    let (bucket, prefix) = match rest.split_once('/') {
        Some((b, p)) => (b, Some(p.trim_matches('/')).filter(|p| !p.is_empty())),
        None => (rest, None),
    };
    if bucket.is_empty() {
        bail!("an s3:// store needs a bucket: s3://bucket/prefix");
    }
    Ok((bucket, prefix))
}

/// An `s3://bucket[/prefix]` URL with the S3 settings the broker reads
/// from the environment: what [`open`] builds a store from, and what
/// `strata bucket` signs its own requests with.
#[derive(Debug, Clone)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix under which everything lives, without slashes at
    /// either end; `None` for the whole bucket.
    pub prefix: Option<String>,
    /// The object_store builder, configured from the `AWS_*` variables.
    pub builder: AmazonS3Builder,
}

impl S3Location {
    /// The endpoint URL (`AWS_ENDPOINT_URL` / `AWS_ENDPOINT`), `None` for
    /// AWS itself.
    pub fn endpoint(&self) -> Option<String> {
        self.builder.get_config_value(&AmazonS3ConfigKey::Endpoint)
    }

    /// The region (`AWS_REGION`, else `AWS_DEFAULT_REGION`, else us-east-1).
    pub fn region(&self) -> String {
        self.builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".to_string())
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        match &self.prefix {
            Some(p) => format!("s3://{}/{p}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }

    /// Builds the S3 client of the bucket (without the prefix).
    pub fn build(&self) -> anyhow::Result<AmazonS3> {
        self.builder.clone().build().with_context(|| {
            format!(
                "cannot configure the S3 store for bucket {}; check the AWS_* variables",
                self.bucket
            )
        })
    }

    /// `store` under the prefix, if any.
    pub fn scoped(&self, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        match &self.prefix {
            Some(p) => Arc::new(PrefixStore::new(store, p.as_str())),
            None => store,
        }
    }
}

/// The bucket, prefix and S3 settings of an `s3://` (or `s3a://`) URL;
/// `None` for other schemes.
pub fn s3_location(url: &str) -> anyhow::Result<Option<S3Location>> {
    match url.split_once("://") {
        Some(("s3" | "s3a", rest)) => s3_location_of(rest, |key| std::env::var(key).ok()).map(Some),
        _ => Ok(None),
    }
}

fn s3_location_of(rest: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<S3Location> {
    let (bucket, prefix) = split_bucket(rest)?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        let region = env("AWS_DEFAULT_REGION").unwrap_or_else(|| "us-east-1".to_string());
        builder = builder.with_region(region);
    }
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if endpoint.is_some() && env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_none() {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    Ok(S3Location {
        bucket: bucket.to_owned(),
        prefix: prefix.map(str::to_owned),
        builder,
    })
}

fn open_s3(
    rest: &str,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let location = s3_location_of(rest, env)?;
    let s3 = location.build()?;
    tracing::info!(
        bucket = location.bucket,
        prefix = location.prefix.as_deref().unwrap_or(""),
        endpoint = location.endpoint().as_deref().unwrap_or("aws"),
        "using an S3 store"
    );
    Ok(location.scoped(Arc::new(s3)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_lists_the_supported_ones() {
        let err = open("gopher://x").expect_err("unsupported");
        let msg = err.to_string();
        assert!(msg.contains("gopher") && msg.contains("s3://"), "{msg}");
        assert!(open("/no/scheme").is_err());
    }

    #[test]
    fn file_and_memory_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/bucket", dir.path().display());
        open(&url).expect("file store");
        assert!(dir.path().join("bucket").is_dir());
        open("memory://").expect("memory store");
    }

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        assert_eq!(split_bucket("b").expect("ok"), ("b", None));
        assert_eq!(split_bucket("b/").expect("ok"), ("b", None));
        assert_eq!(split_bucket("b/p/q/").expect("ok"), ("b", Some("p/q")));
        assert!(split_bucket("").is_err());
    }
}
