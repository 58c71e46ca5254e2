//! `strata bucket create|check`: prepare the bucket a cluster will use, and
//! check that one works, before a broker runs on it.
//!
//! Both take the store URL `strata serve` takes (`--store`, or
//! `STRATA_STORE`) and read the same `AWS_*` variables, so what they check
//! is what a broker will see. They print one line per step on stdout
//! (`ok`, `FAILED` with what to fix, `WARNING`, `skipped`) and exit
//! non-zero when a step failed.
//!
//! Objects and multipart uploads go through object_store, as a broker's
//! do; the bucket-level requests object_store does not make (CreateBucket,
//! GetBucketLocation, lifecycle rules) are signed here
//! ([`crate::s3_admin`]).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use object_store::aws::AmazonS3ConfigKey;
use object_store::client::ClientConfigKey;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::print_stdout;
use crate::s3_admin::{self, AdminError, Created, S3Admin};
use crate::store_url::{self, S3Location};

/// Size of the first part of the multipart check: S3's smallest part
/// (every part but the last must be at least 5 MiB).
const PART_BYTES: usize = 5 << 20;

/// Prepare and check the bucket Strata keeps everything in.
#[derive(Debug, clap::Subcommand)]
pub enum BucketCommand {
    /// Create the bucket and the lifecycle rule Strata needs.
    ///
    /// For s3://bucket[/prefix]: creates the bucket in AWS_REGION (nothing
    /// happens if it exists already), then adds a lifecycle rule that
    /// aborts multipart uploads under the prefix that are still incomplete
    /// a day after they started (a broker killed during a segment upload
    /// leaves parts that are billed until deleted). The bucket's other
    /// lifecycle rules are kept. The credentials need s3:CreateBucket,
    /// s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration: an
    /// operator's, not a broker's.
    ///
    /// For file:///path: creates the directory.
    ///
    /// Example: strata bucket create --store s3://my-strata-bucket/prod
    Create(BucketArgs),
    /// Check that a bucket works for Strata, one line per check.
    ///
    /// For s3:// URLs: the credentials (found, and accepted by the
    /// endpoint), the bucket, then LIST, PUT, GET, DELETE and a multipart
    /// upload (completed, and another aborted) under the prefix, the
    /// create-only writes every broker relies on (If-None-Match: *, raced
    /// by 8 writers), and the lifecycle rule `strata bucket create` adds.
    /// For file:// URLs, what applies. Each FAILED line says what to fix;
    /// the exit status is non-zero if any check failed. Run it with a
    /// broker's credentials (its instance role) to check its permissions.
    ///
    /// Example: strata bucket check --store s3://my-strata-bucket/prod
    Check(BucketArgs),
}

/// Arguments of `strata bucket create|check`.
#[derive(Debug, clap::Args)]
pub struct BucketArgs {
    /// The store, as `strata serve --store` takes it: s3://bucket[/prefix]
    /// or file:///path. Endpoint, region and credentials come from the
    /// AWS_* variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP), as for a
    /// broker.
    #[arg(long, env = "STRATA_STORE", value_name = "URL")]
    pub store: String,
}

/// Runs the command.
pub async fn run(command: BucketCommand) -> anyhow::Result<()> {
    match command {
        BucketCommand::Create(a) => create(&a.store).await,
        BucketCommand::Check(a) => check(&a.store).await,
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Warning,
    Skipped,
}

/// The lines printed so far.
#[derive(Debug, Default)]
struct Report {
    steps: usize,
    failed: usize,
}

impl Report {
    fn line(&mut self, outcome: Outcome, step: &str, text: impl AsRef<str>) -> anyhow::Result<()> {
        self.steps += 1;
        let label = match outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => {
                self.failed += 1;
                "FAILED"
            }
            Outcome::Warning => "WARNING",
            Outcome::Skipped => "skipped",
        };
        print_stdout(&format!("{label:<8}{step:<16}{}\n", text.as_ref()))
    }

    fn ok(&mut self, step: &str, text: impl AsRef<str>) -> anyhow::Result<()> {
        self.line(Outcome::Ok, step, text)
    }

    fn failed(&mut self, step: &str, text: impl AsRef<str>) -> anyhow::Result<()> {
        self.line(Outcome::Failed, step, text)
    }

    /// Skips `steps` because of what failed before them.
    fn skip_all(&mut self, steps: &[&str], why: &str) -> anyhow::Result<()> {
        for step in steps {
            self.line(Outcome::Skipped, step, why)?;
        }
        Ok(())
    }

    /// Ok(()) when nothing failed, else an error saying how much did.
    fn finish(&self, what: &str) -> anyhow::Result<()> {
        if self.failed == 0 {
            eprintln!("{what}: all {} steps passed", self.steps);
            Ok(())
        } else {
            bail!(
                "{what}: {} of {} steps failed; fix what their FAILED lines say and run it again",
                self.failed,
                self.steps
            )
        }
    }
}

/// What the URL names.
enum Target {
    S3(Box<S3Location>),
    Dir(std::path::PathBuf),
}

fn target(url: &str) -> anyhow::Result<Target> {
    if let Some(location) = store_url::s3_location(url)? {
        return Ok(Target::S3(Box::new(location)));
    }
    match url.split_once("://") {
        Some(("file", path)) if !path.is_empty() => Ok(Target::Dir(path.into())),
        Some(("memory", _)) => bail!(
            "memory:// lives inside one broker process: there is no bucket to create or check"
        ),
        _ => bail!(
            "unsupported store URL {url:?}: use s3://bucket[/prefix] or file:///path (as for strata serve --store)"
        ),
    }
}

async fn create(url: &str) -> anyhow::Result<()> {
    let mut report = Report::default();
    match target(url)? {
        Target::Dir(dir) => {
            let existed = dir.is_dir();
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the directory {}", dir.display()))?;
            let what = if existed { "exists" } else { "created" };
            report.ok("directory", format!("{what}: {}", dir.display()))?;
        }
        Target::S3(location) => create_s3(&location, &mut report).await?,
    }
    report.finish(&format!("strata bucket create --store {url}"))?;
    eprintln!("next: strata bucket check --store {url}");
    Ok(())
}

async fn create_s3(location: &S3Location, report: &mut Report) -> anyhow::Result<()> {
    let admin = S3Admin::new(location)?;
    let bucket = &location.bucket;
    let exists = match admin.location().await {
        Ok(()) => true,
        Err(e) if e.code() == Some("AccessDenied") => true,
        Err(e) if e.code() == Some("NoSuchBucket") => false,
        Err(e) => {
            report.failed("bucket", admin_advice(&e, location))?;
            return report.skip_all(&["lifecycle"], "needs the bucket");
        }
    };
    if exists {
        report.ok("bucket", format!("{bucket} exists already"))?;
    } else {
        match admin.create_bucket().await {
            Ok(Created::New) => {
                report.ok("bucket", format!("created {bucket} in {}", admin.region()))?;
            }
            Ok(Created::AlreadyYours) => {
                report.ok("bucket", format!("{bucket} is yours already"))?
            }
            Err(e) => {
                let fix = match e.code() {
                    Some("BucketAlreadyExists") => format!(
                        "{e}: the name {bucket} belongs to another account (bucket names are \
                         global on AWS); choose another"
                    ),
                    Some("InvalidBucketName") => format!(
                        "{e}: a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens"
                    ),
                    Some("AccessDenied") => format!(
                        "{e}: these credentials may not create buckets (s3:CreateBucket); use an \
                         operator's, or have one create it"
                    ),
                    _ => admin_advice(&e, location),
                };
                report.failed("bucket", fix)?;
                return report.skip_all(&["lifecycle"], "needs the bucket");
            }
        }
    }
    let prefix = location.prefix.as_deref();
    let under = match prefix {
        Some(p) => format!("under {p}/"),
        None => "in the whole bucket".to_owned(),
    };
    let existing = match admin.lifecycle().await {
        Ok(existing) => existing,
        Err(e) => return report.line(lifecycle_outcome(&e), "lifecycle", lifecycle_advice(&e)),
    };
    if let Some(xml) = &existing
        && let Some((id, days)) = s3_admin::covering_abort_rule(xml, prefix)?
    {
        return report.ok(
            "lifecycle",
            format!(
                "rule {id} aborts incomplete multipart uploads {under} after {days} day(s) already"
            ),
        );
    }
    let xml = s3_admin::lifecycle_with_abort_rule(existing.as_deref(), prefix)?;
    match admin.put_lifecycle(&xml).await {
        Ok(()) => report.ok(
            "lifecycle",
            format!(
                "added rule {}: incomplete multipart uploads {under} are aborted after {} day{}",
                s3_admin::RULE_ID,
                s3_admin::ABORT_AFTER_DAYS,
                if existing.is_some() {
                    " (the bucket's other rules are kept)"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => report.line(lifecycle_outcome(&e), "lifecycle", lifecycle_advice(&e)),
    }
}

/// Servers without lifecycle rules get a warning, not a failure: MinIO,
/// for one, cleans up stale multipart uploads by itself.
fn lifecycle_outcome(e: &AdminError) -> Outcome {
    match e.code() {
        Some("NotImplemented" | "MalformedXML") => Outcome::Warning,
        _ => Outcome::Failed,
    }
}

fn lifecycle_advice(e: &AdminError) -> String {
    match e.code() {
        Some("AccessDenied") => format!(
            "{e}: these credentials may not read or change lifecycle rules \
             (s3:GetLifecycleConfiguration, s3:PutLifecycleConfiguration); use an operator's, \
             or add a rule that aborts incomplete multipart uploads after {} day yourself",
            s3_admin::ABORT_AFTER_DAYS
        ),
        Some("NotImplemented" | "MalformedXML") => format!(
            "{e}: this server does not take a rule that aborts incomplete multipart uploads; \
             make sure it cleans them up by itself (MinIO does, after 24h)"
        ),
        _ => e.to_string(),
    }
}

/// What to fix for a failed bucket-level request.
fn admin_advice(e: &AdminError, location: &S3Location) -> String {
    let url = location.url();
    match e {
        AdminError::Credentials(_) => format!(
            "{e}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for \
             temporary ones), or run where an instance profile or role provides them"
        ),
        AdminError::Transport { .. } => format!(
            "{e}: check AWS_ENDPOINT_URL (unset for AWS itself; for a plain-http endpoint also \
             AWS_ALLOW_HTTP=true) and that the network reaches it"
        ),
        AdminError::Sign(_) => e.to_string(),
        AdminError::S3 { code, .. } => match code.as_str() {
            "NoSuchBucket" => format!(
                "the bucket {} does not exist: create it with `strata bucket create --store {url}`",
                location.bucket
            ),
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "ExpiredToken"
            | "TokenRefreshRequired" => format!(
                "{e}: the endpoint refused these credentials; check AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
            ),
            "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException" => {
                format!(
                    "{e}: the bucket is in another region than {}; set AWS_REGION to its region",
                    location.region()
                )
            }
            _ => e.to_string(),
        },
    }
}

async fn check(url: &str) -> anyhow::Result<()> {
    let mut report = Report::default();
    match target(url)? {
        Target::Dir(dir) => {
            if dir.is_dir() {
                report.ok("directory", format!("{} exists", dir.display()))?;
                let store = store_url::open(url)?;
                check_objects(&store, url, None, &mut report).await?;
            } else {
                report.failed(
                    "directory",
                    format!(
                        "{} does not exist: create it with `strata bucket create --store {url}`",
                        dir.display()
                    ),
                )?;
                report.skip_all(OBJECT_STEPS, "needs the directory")?;
            }
        }
        Target::S3(location) => check_s3(*location, &mut report).await?,
    }
    report.finish(&format!("strata bucket check --store {url}"))
}

/// The steps of [`check_objects`], in order.
const OBJECT_STEPS: &[&str] = &["list", "put", "get", "delete", "multipart", "create-only"];

async fn check_s3(mut location: S3Location, report: &mut Report) -> anyhow::Result<()> {
    const AFTER_BUCKET: &[&str] = &[
        "list",
        "put",
        "get",
        "delete",
        "multipart",
        "create-only",
        "lifecycle",
    ];
    // Fail fast: a check is no place for object_store's three minutes of
    // retries against an endpoint that is not there.
    location.builder = location
        .builder
        .with_retry(object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..object_store::RetryConfig::default()
        })
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        );
    let url = location.url();
    let admin = S3Admin::new(&location)?;
    let credential = match admin.credential().await {
        Ok(c) => c,
        Err(e) => {
            report.failed("credentials", admin_advice(&e, &location))?;
            report.skip_all(&["bucket"], "needs credentials")?;
            return report.skip_all(AFTER_BUCKET, "needs credentials");
        }
    };
    let key = mask(&credential.key_id);
    let source = credential_source(&location);
    let accepted = format!("access key {key} ({source}), accepted by {}", admin.url());
    match admin.location().await {
        Ok(()) => {
            report.ok("credentials", accepted)?;
            report.ok("bucket", format!("{} exists", location.bucket))?;
        }
        Err(e) if e.code() == Some("AccessDenied") => {
            report.ok("credentials", accepted)?;
            report.ok(
                "bucket",
                format!(
                    "{} exists (these credentials may not read its location; Strata does not need to)",
                    location.bucket
                ),
            )?;
        }
        Err(e) if e.code() == Some("NoSuchBucket") => {
            report.ok("credentials", accepted)?;
            report.failed("bucket", admin_advice(&e, &location))?;
            return report.skip_all(AFTER_BUCKET, "needs the bucket");
        }
        Err(e @ (AdminError::Credentials(_) | AdminError::Transport { .. })) => {
            report.failed("credentials", admin_advice(&e, &location))?;
            report.skip_all(&["bucket"], "needs an answer from the endpoint")?;
            return report.skip_all(AFTER_BUCKET, "needs an answer from the endpoint");
        }
        Err(e) => {
            let refused = matches!(
                e.code(),
                Some(
                    "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "InvalidToken"
                        | "ExpiredToken"
                        | "TokenRefreshRequired"
                )
            );
            if refused {
                report.failed("credentials", admin_advice(&e, &location))?;
                report.skip_all(&["bucket"], "needs accepted credentials")?;
            } else {
                report.ok("credentials", format!("access key {key} ({source})"))?;
                report.failed("bucket", admin_advice(&e, &location))?;
            }
            return report.skip_all(AFTER_BUCKET, "needs the bucket");
        }
    }
    let store = location.scoped(Arc::new(location.build()?));
    check_objects(&store, &url, Some(&location), report).await?;

    let prefix = location.prefix.as_deref();
    match admin.lifecycle().await {
        Ok(Some(xml)) => match s3_admin::covering_abort_rule(&xml, prefix)? {
            Some((id, days)) => report.ok(
                "lifecycle",
                format!("rule {id} aborts incomplete multipart uploads after {days} day(s)"),
            )?,
            None => report.line(Outcome::Warning, "lifecycle", no_rule(&url))?,
        },
        Ok(None) => report.line(Outcome::Warning, "lifecycle", no_rule(&url))?,
        Err(e) if e.code() == Some("AccessDenied") => report.line(
            Outcome::Skipped,
            "lifecycle",
            "these credentials may not read lifecycle rules (s3:GetLifecycleConfiguration; a \
             broker does not need it); make sure a rule aborts incomplete multipart uploads",
        )?,
        Err(e) => report.line(lifecycle_outcome(&e), "lifecycle", lifecycle_advice(&e))?,
    }
    Ok(())
}

fn no_rule(url: &str) -> String {
    format!(
        "no rule aborts incomplete multipart uploads here: parts of uploads a killed broker never \
         finished are billed until deleted; `strata bucket create --store {url}` adds one"
    )
}

/// Where object_store found the credentials, for the report.
fn credential_source(location: &S3Location) -> &'static str {
    let set = |key| location.builder.get_config_value(&key).is_some();
    if set(AmazonS3ConfigKey::AccessKeyId) {
        "from AWS_ACCESS_KEY_ID"
    } else if set(AmazonS3ConfigKey::WebIdentityTokenFile) {
        "web identity, from AWS_WEB_IDENTITY_TOKEN_FILE"
    } else if set(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || set(AmazonS3ConfigKey::ContainerCredentialsFullUri)
    {
        "the container's credentials"
    } else {
        "the instance profile"
    }
}

/// `AKIA…MPLE`: enough to tell keys apart in a report.
fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return key.to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// The object steps ([`OBJECT_STEPS`]) under a fresh scratch folder of
/// `store`, which it deletes (best-effort) afterwards. `s3` names the
/// bucket and prefix in the permissions a failure asks for.
async fn check_objects(
    store: &Arc<dyn ObjectStore>,
    url: &str,
    s3: Option<&S3Location>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let scratch = Path::from(format!("bucket-check-{}", uuid::Uuid::new_v4().simple()));
    let object = scratch.clone().join("object");
    let permission = |action: &str| match s3 {
        Some(l) => {
            let objects = match &l.prefix {
                Some(p) => format!("arn:aws:s3:::{}/{p}/*", l.bucket),
                None => format!("arn:aws:s3:::{}/*", l.bucket),
            };
            let resource = if action == "s3:ListBucket" {
                format!("arn:aws:s3:::{}", l.bucket)
            } else {
                objects
            };
            format!("; grant {action} on {resource} to these credentials")
        }
        None => "; check the directory's owner and permissions".to_owned(),
    };
    let advice = |e: &object_store::Error, action: &str| -> String {
        let text = short(e);
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                format!("{text}{}", permission(action))
            }
            _ if text.contains("NoSuchBucket") => format!(
                "{text}; the bucket does not exist: create it with `strata bucket create --store {url}`"
            ),
            _ => text,
        }
    };

    // list
    match store.list_with_delimiter(None).await {
        Ok(l) => report.ok(
            "list",
            format!(
                "{} objects and {} folders at the top of {url}",
                l.objects.len(),
                l.common_prefixes.len()
            ),
        )?,
        Err(e) => report.failed("list", advice(&e, "s3:ListBucket"))?,
    }

    // put, get, delete
    let payload = Bytes::from(format!("strata bucket check {}", uuid::Uuid::new_v4()));
    let put = store.put(&object, PutPayload::from(payload.clone())).await;
    match &put {
        Ok(_) => report.ok("put", format!("wrote {object}"))?,
        Err(e) => report.failed("put", advice(e, "s3:PutObject"))?,
    }
    if put.is_ok() {
        match get(store, &object).await {
            Ok(b) if b == payload => report.ok("get", format!("read {object} back"))?,
            Ok(b) => report.failed(
                "get",
                format!(
                    "read {} bytes back from {object} where {} were written: the store does not \
                     return what it stored",
                    b.len(),
                    payload.len()
                ),
            )?,
            Err(e) => report.failed("get", advice(&e, "s3:GetObject"))?,
        }
        match store.delete(&object).await {
            Ok(()) => match store.head(&object).await {
                Err(object_store::Error::NotFound { .. }) => {
                    report.ok("delete", format!("deleted {object}"))?;
                }
                Ok(_) => report.failed(
                    "delete",
                    format!("{object} is still there after DELETE answered ok"),
                )?,
                Err(e) => report.failed("delete", advice(&e, "s3:GetObject"))?,
            },
            Err(e) => report.failed("delete", advice(&e, "s3:DeleteObject"))?,
        }
    } else {
        report.skip_all(&["get", "delete"], "needs a successful put")?;
    }

    // multipart
    match multipart(store, &scratch).await {
        Ok(text) => report.ok("multipart", text)?,
        Err((e, action)) => report.failed("multipart", advice(&e, action))?,
    }

    // create-only
    match strata_storage::selftest::check_conditional_writes(store, &scratch, url).await {
        Ok(()) => report.ok(
            "create-only",
            format!(
                "PutMode::Create (If-None-Match: *) is enforced: of {} writers racing for one \
                 key exactly one won",
                strata_storage::selftest::RACE_WRITERS
            ),
        )?,
        Err(e) => {
            let text = match &e {
                strata_storage::Error::UnsafeStore(_) => format!(
                    "{e}; brokers refuse this store: it could let two of them own one partition"
                ),
                _ => format!("{e}{}", permission("s3:PutObject")),
            };
            report.failed("create-only", text)?;
        }
    }

    // Whatever a failed step left behind.
    let _ = store.delete(&object).await;
    for name in ["multipart", "aborted"] {
        let _ = store.delete(&scratch.clone().join(name)).await;
    }
    Ok(())
}

async fn get(store: &Arc<dyn ObjectStore>, key: &Path) -> object_store::Result<Bytes> {
    store.get(key).await?.bytes().await
}

/// Completes a two-part upload (read back by size, then deleted) and
/// aborts another. The error names the permission the failed request
/// needs.
async fn multipart(
    store: &Arc<dyn ObjectStore>,
    scratch: &Path,
) -> Result<String, (object_store::Error, &'static str)> {
    let key = scratch.clone().join("multipart");
    let put = |e| (e, "s3:PutObject");
    let mut upload = store.put_multipart(&key).await.map_err(put)?;
    upload
        .put_part(PutPayload::from(vec![b'a'; PART_BYTES]))
        .await
        .map_err(put)?;
    upload
        .put_part(PutPayload::from(vec![b'b'; 1024]))
        .await
        .map_err(put)?;
    upload.complete().await.map_err(put)?;
    let size = store
        .head(&key)
        .await
        .map_err(|e| (e, "s3:GetObject"))?
        .size;
    store
        .delete(&key)
        .await
        .map_err(|e| (e, "s3:DeleteObject"))?;
    let expected = (PART_BYTES + 1024) as u64;
    if size != expected {
        return Err((
            object_store::Error::Generic {
                store: "bucket check",
                source: format!(
                    "a completed 2-part upload of {expected} bytes has {size}: the store does not \
                     join parts correctly"
                )
                .into(),
            },
            "s3:PutObject",
        ));
    }
    let aborted = scratch.clone().join("aborted");
    let mut upload = store.put_multipart(&aborted).await.map_err(put)?;
    upload
        .put_part(PutPayload::from(vec![b'c'; 1024]))
        .await
        .map_err(put)?;
    upload
        .abort()
        .await
        .map_err(|e| (e, "s3:AbortMultipartUpload"))?;
    let mut text = String::new();
    let _ = write!(
        text,
        "completed a 2-part upload ({}), read its size back and deleted it; aborted another",
        super::human_bytes(expected)
    );
    Ok(text)
}

/// An object_store error, short enough for one line.
fn short(e: &object_store::Error) -> String {
    let text = e.to_string().replace('\n', " ");
    if text.chars().count() > 400 {
        let cut: String = text.chars().take(400).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_and_urls_checked() {
        assert_eq!(mask("AKIAIOSFODNN7EXAMPLE"), "AKIA…MPLE");
        assert_eq!(mask("test"), "test");
        assert!(matches!(target("file:///tmp/x"), Ok(Target::Dir(_))));
        assert!(matches!(target("s3://b/p"), Ok(Target::S3(_))));
        for bad in ["memory://", "gs://b", "/tmp/x", "file://"] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_directory_is_created_then_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}/bucket", dir.path().display());
        let err = check(&url).await.expect_err("missing directory");
        assert!(err.to_string().contains("1 of 7 steps failed"), "{err}");
        create(&url).await.expect("create");
        check(&url)
            .await
            .expect("every check passes on a fresh directory");
        fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir)
                .expect("read_dir")
                .flatten()
                .flat_map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        files(&path)
                    } else {
                        vec![path]
                    }
                })
                .collect()
        }
        let left = files(&dir.path().join("bucket"));
        assert!(
            left.is_empty(),
            "the check leaves no object behind: {left:?}"
        );
    }
}
