//! The S3 test fixture itself: it serves a working bucket, and an owned
//! server goes away with its handle.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode};
use strata_tests::s3::TestS3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_fresh_and_isolated() {
    let s3 = TestS3::shared().await;
    let a = s3.bucket().await;
    let b = s3.bucket().await;
    let key = Path::from("k");
    a.put_opts(&key, "a".into(), PutMode::Create.into())
        .await
        .unwrap();
    assert!(
        matches!(b.get(&key).await, Err(object_store::Error::NotFound { .. })),
        "a new bucket must be empty"
    );
    b.put_opts(&key, "b".into(), PutMode::Create.into())
        .await
        .unwrap();
    assert_eq!(a.get(&key).await.unwrap().bytes().await.unwrap(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_server_stops_on_drop() {
    if std::env::var_os("STRATA_TEST_S3_ENDPOINT").is_some() {
        // An external endpoint is not ours to stop; nothing is started.
        let s3 = TestS3::start().await;
        assert_eq!(
            s3.endpoint(),
            std::env::var("STRATA_TEST_S3_ENDPOINT")
                .unwrap()
                .trim_end_matches('/')
        );
        return;
    }
    let s3 = TestS3::start().await;
    let addr = s3.endpoint().strip_prefix("http://").unwrap().to_owned();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_ok(),
        "the server must be up"
    );
    drop(s3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "moto_server on {addr} still answers after its TestS3 was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
