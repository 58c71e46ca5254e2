//! `strata bucket create|check` against the S3 test server (issue #14):
//! a bucket made by `create` passes every line of `check`, and has the
//! lifecycle rule that aborts incomplete multipart uploads (read back with
//! the AWS SDK's signed GET ?lifecycle); `check` of a bucket that does not
//! exist fails with a line that says to run `strata bucket create`.
#![allow(clippy::unwrap_used)]

use std::process::ExitStatus;
use std::time::Duration;

use aws_sdk_s3::types::{ExpirationStatus, LifecycleRule};
use strata_tests::broker::run_cli_with_env;
use strata_tests::s3::TestS3;

/// `bucket check` uploads 5 MiB and races eight writers: seconds on moto.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// The steps `strata bucket check` reports on an S3 store, in order.
const CHECK_STEPS: [&str; 9] = [
    "credentials",
    "bucket",
    "list",
    "put",
    "get",
    "delete",
    "multipart",
    "create-only",
    "lifecycle",
];

async fn strata(s3: &TestS3, args: &[&str]) -> (ExitStatus, String, String) {
    run_cli_with_env(args, &s3.env(), "", CLI_TIMEOUT).await
}

/// A bucket URL nobody uses yet: a fresh bucket, or with
/// `STRATA_TEST_S3_BUCKET` a fresh prefix of that one.
fn fresh_url(s3: &TestS3) -> (String, String, String) {
    let name = format!("strata-test-{}", uuid::Uuid::new_v4().simple());
    match s3.existing_bucket() {
        Some(bucket) => (format!("s3://{bucket}/{name}"), bucket.to_owned(), name),
        None => (format!("s3://{name}/dev"), name, "dev".to_owned()),
    }
}

/// The outcome, step and text of every line of a report.
fn lines(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .map(|l| {
            let mut words = l.split_whitespace();
            let outcome = words.next().unwrap_or_default().to_owned();
            let step = words.next().unwrap_or_default().to_owned();
            (outcome, step, words.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_bucket_passes_every_check_and_has_the_lifecycle_rule() {
    let s3 = TestS3::shared().await;
    let (url, bucket, prefix) = fresh_url(s3);

    let (status, out, err) = strata(s3, &["bucket", "create", "--store", &url]).await;
    assert!(status.success(), "create failed:\n{out}{err}");
    let created = lines(&out);
    assert_eq!(
        created
            .iter()
            .map(|l| (l.0.as_str(), l.1.as_str()))
            .collect::<Vec<_>>(),
        [("ok", "bucket"), ("ok", "lifecycle")],
        "{out}"
    );
    assert!(created[1].2.contains("added rule"), "{out}");
    assert!(
        err.contains("strata bucket check --store"),
        "create says what is next: {err}"
    );

    let (status, out, err) = strata(s3, &["bucket", "check", "--store", &url]).await;
    assert!(status.success(), "check failed:\n{out}{err}");
    let report = lines(&out);
    assert_eq!(
        report.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        CHECK_STEPS,
        "one line per check:\n{out}"
    );
    for (outcome, step, text) in &report {
        assert_eq!(outcome, "ok", "{step}: {text}\n{out}");
    }
    assert!(err.contains("all 9 steps passed"), "{err}");

    // The rule, as S3 reads it back.
    let config = s3
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GET ?lifecycle: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
    let rule: &LifecycleRule = config
        .rules()
        .iter()
        .find(|r| r.id() == Some("strata-abort-incomplete-multipart-uploads"))
        .unwrap_or_else(|| panic!("no Strata rule in {config:?}"));
    assert_eq!(rule.status(), &ExpirationStatus::Enabled, "{rule:?}");
    assert_eq!(
        rule.abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        Some(1),
        "{rule:?}"
    );
    assert_eq!(
        rule.filter().and_then(|f| f.prefix()),
        Some(format!("{prefix}/").as_str()),
        "the rule covers the store's prefix only: {rule:?}"
    );

    // Again: nothing to do, nothing duplicated.
    let (status, out, err) = strata(s3, &["bucket", "create", "--store", &url]).await;
    assert!(status.success(), "a second create failed:\n{out}{err}");
    assert!(
        out.contains("exists already") && out.contains("already"),
        "{out}"
    );
    let config = s3
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(config.rules().len(), 1, "{config:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_a_missing_bucket_says_to_create_it() {
    let s3 = TestS3::shared().await;
    if s3.existing_bucket().is_some() {
        // Credentials that may not create buckets may not see others'
        // missing ones the same way; the create test covers this server.
        return;
    }
    let url = format!("s3://strata-missing-{}/dev", uuid::Uuid::new_v4().simple());
    let (status, out, err) = strata(s3, &["bucket", "check", "--store", &url]).await;
    assert!(
        !status.success(),
        "check of a missing bucket must fail:\n{out}{err}"
    );
    let report = lines(&out);
    let bucket = report
        .iter()
        .find(|l| l.1 == "bucket")
        .unwrap_or_else(|| panic!("no bucket line:\n{out}"));
    assert_eq!(bucket.0, "FAILED", "{out}");
    assert!(
        bucket
            .2
            .contains(&format!("strata bucket create --store {url}")),
        "the line says what to run: {out}"
    );
    assert_eq!(report[0].0, "ok", "the credentials are fine: {out}");
    assert!(
        report[2..].iter().all(|l| l.0 == "skipped"),
        "the rest needs the bucket: {out}"
    );
    assert!(err.contains("1 of 9 steps failed"), "{err}");
}
