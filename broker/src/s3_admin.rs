//! Bucket-level S3 requests that object_store does not make (it works on
//! objects only): CreateBucket, GetBucketLocation and
//! Get/PutBucketLifecycleConfiguration, for `strata bucket create|check`.
//! A broker never calls these.
//!
//! Requests are signed with SigV4 (`aws-sigv4`) with the credentials that
//! object_store's own provider chain finds (the same `AWS_*` variables,
//! web identity, container or instance credentials a broker uses), and
//! sent with reqwest, object_store's HTTP client. The bucket's URL is
//! built as object_store builds it ([`crate::store_url::S3Location`]), so
//! these requests go where the broker's go.
//!
//! The lifecycle rule Strata wants ([`abort_rule`]): incomplete multipart
//! uploads under the store's prefix are aborted a day after they started
//! (a broker killed during a segment upload leaves parts that are billed
//! until then). [`lifecycle_with_abort_rule`] adds it to a bucket's
//! existing rules without touching them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use bytes::Bytes;
use md5::Digest as _;
use object_store::aws::{AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider};
use object_store::client::ClientConfigKey;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::store_url::S3Location;

/// Days after which the rule aborts an incomplete multipart upload.
pub const ABORT_AFTER_DAYS: u32 = 1;

/// The id of the rule [`abort_rule`] writes.
pub const RULE_ID: &str = "strata-abort-incomplete-multipart-uploads";

/// How long fetching credentials may take (an instance's metadata
/// service answers in milliseconds; elsewhere it is not there at all).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(15);

/// A failed bucket-level request.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No credentials could be found.
    #[error("no credentials found ({0})")]
    Credentials(String),
    /// The endpoint could not be reached (or did not answer).
    #[error("cannot reach {endpoint}: {}", causes(source))]
    Transport {
        /// The bucket's URL.
        endpoint: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// S3 answered with an error.
    #[error("{code} (HTTP {status}): {message}")]
    S3 {
        /// The HTTP status.
        status: u16,
        /// S3's error code (`NoSuchBucket`, `AccessDenied`, ...).
        code: String,
        /// S3's message.
        message: String,
    },
    /// The request could not be signed.
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

/// `e` and its sources, `: `-separated (reqwest's own message leaves out
/// the part that says what went wrong: "connection refused").
fn causes(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

impl AdminError {
    /// S3's error code, if S3 answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::S3 { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What [`S3Admin::create_bucket`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The bucket is new.
    New,
    /// It existed already and belongs to these credentials' account.
    AlreadyYours,
}

/// Signed bucket-level requests to one bucket.
#[derive(Debug)]
pub struct S3Admin {
    http: reqwest::Client,
    /// The bucket's URL, without a trailing slash.
    url: String,
    region: String,
    credentials: AwsCredentialProvider,
}

impl S3Admin {
    /// Requests to the bucket `location` names.
    pub fn new(location: &S3Location) -> anyhow::Result<Self> {
        let url = bucket_url(location);
        let allow_http = location
            .builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if url.starts_with("http://") && !allow_http {
            bail!("the endpoint {url} is plain http: set AWS_ALLOW_HTTP=true to allow it");
        }
        let s3 = location.build()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot start an HTTP client")?;
        Ok(Self {
            http,
            url,
            region: location.region(),
            credentials: s3.credentials().clone(),
        })
    }

    /// The bucket's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The credentials requests are signed with.
    pub async fn credential(&self) -> Result<Arc<AwsCredential>, AdminError> {
        match tokio::time::timeout(CREDENTIALS_TIMEOUT, self.credentials.get_credential()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(AdminError::Credentials(e.to_string())),
            Err(_) => Err(AdminError::Credentials(format!(
                "none in the environment, and no instance or container credentials answered within {}s",
                CREDENTIALS_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Sends a signed request to the bucket's URL plus `query` (`""`,
    /// `"?lifecycle"`); returns the body of a 2xx answer.
    async fn send(
        &self,
        method: reqwest::Method,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Bytes, AdminError> {
        let credential = self.credential().await?;
        let url = format!("{}{query}", self.url);
        let identity = Credentials::new(
            &credential.key_id,
            &credential.secret_key,
            credential.token.clone(),
            None,
            "strata",
        )
        .into();
        let mut settings = SigningSettings::default();
        // What S3 wants: the payload's hash in x-amz-content-sha256, and
        // the path signed as sent.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| AdminError::Sign(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url.as_str(),
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| AdminError::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| AdminError::Sign(e.to_string()))?
            .into_parts();
        let mut request = self.http.request(method, &url);
        for (k, v) in headers {
            request = request.header(*k, v.as_str());
        }
        for (k, v) in instructions.headers() {
            request = request.header(k, v);
        }
        let transport = |source| AdminError::Transport {
            endpoint: self.url.clone(),
            source,
        };
        let response = request.body(body).send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body);
        }
        let (code, message) = match quick_xml::de::from_reader::<_, ErrorBody>(&body[..]) {
            Ok(e) => (e.code, e.message),
            // A HEAD, or a proxy's page.
            Err(_) => (
                status
                    .canonical_reason()
                    .unwrap_or("Error")
                    .replace(' ', ""),
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        Err(AdminError::S3 {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// CreateBucket, in the configured region.
    pub async fn create_bucket(&self) -> Result<Created, AdminError> {
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml_escape(&self.region)
            ))
        };
        match self.send(reqwest::Method::PUT, "", &[], body).await {
            Ok(_) => Ok(Created::New),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(Created::AlreadyYours),
            Err(e) => Err(e),
        }
    }

    /// GetBucketLocation: proves the credentials are accepted and the
    /// bucket exists (`AccessDenied` proves the former only).
    pub async fn location(&self) -> Result<(), AdminError> {
        self.send(reqwest::Method::GET, "?location", &[], Bytes::new())
            .await
            .map(|_| ())
    }

    /// The bucket's lifecycle configuration (XML), `None` when it has none.
    pub async fn lifecycle(&self) -> Result<Option<String>, AdminError> {
        match self
            .send(reqwest::Method::GET, "?lifecycle", &[], Bytes::new())
            .await
        {
            Ok(body) => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PutBucketLifecycleConfiguration: replaces the bucket's rules with
    /// `xml` (see [`lifecycle_with_abort_rule`] to keep them).
    pub async fn put_lifecycle(&self, xml: &str) -> Result<(), AdminError> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml));
        let headers = [
            ("content-md5", md5),
            ("content-type", "application/xml".to_owned()),
        ];
        self.send(
            reqwest::Method::PUT,
            "?lifecycle",
            &headers,
            Bytes::from(xml.to_owned()),
        )
        .await
        .map(|_| ())
    }
}

/// The bucket's URL, as object_store builds it (without S3 Express).
fn bucket_url(location: &S3Location) -> String {
    let virtual_hosted = location
        .builder
        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let bucket = &location.bucket;
    let region = location.region();
    match (location.endpoint(), virtual_hosted) {
        (Some(endpoint), true) => endpoint.trim_end_matches('/').to_owned(),
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    }
}

/// S3's error document.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// The part of a lifecycle configuration this module reads.
#[derive(Debug, Default, Deserialize)]
struct LifecycleConfiguration {
    #[serde(rename = "Rule", default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Status", default)]
    status: String,
    /// The legacy form of the filter.
    #[serde(rename = "Prefix", default)]
    prefix: Option<String>,
    #[serde(rename = "Filter", default)]
    filter: Option<Filter>,
    #[serde(rename = "AbortIncompleteMultipartUpload", default)]
    abort: Option<Abort>,
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    #[serde(rename = "Prefix", default)]
    prefix: Option<String>,
    // Any of these narrows the rule to fewer objects than a prefix.
    #[serde(rename = "Tag", default)]
    tag: Option<IgnoredAny>,
    #[serde(rename = "And", default)]
    and: Option<IgnoredAny>,
    #[serde(rename = "ObjectSizeGreaterThan", default)]
    size_above: Option<IgnoredAny>,
    #[serde(rename = "ObjectSizeLessThan", default)]
    size_below: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct Abort {
    #[serde(rename = "DaysAfterInitiation")]
    days: u32,
}

/// The key prefix a lifecycle rule for `prefix` filters on (`prefix/`, or
/// `""` for the whole bucket).
fn rule_prefix(prefix: Option<&str>) -> String {
    prefix.map(|p| format!("{p}/")).unwrap_or_default()
}

/// The rule Strata wants, as a `<Rule>` element.
pub fn abort_rule(prefix: Option<&str>) -> String {
    format!(
        "<Rule><ID>{RULE_ID}</ID><Filter><Prefix>{}</Prefix></Filter><Status>Enabled</Status>\
         <AbortIncompleteMultipartUpload><DaysAfterInitiation>{ABORT_AFTER_DAYS}</DaysAfterInitiation>\
         </AbortIncompleteMultipartUpload></Rule>",
        xml_escape(&rule_prefix(prefix))
    )
}

/// An enabled rule of `xml` that aborts the incomplete multipart uploads
/// of everything under `prefix`: its id (or `"(no id)"`) and days.
pub fn covering_abort_rule(
    xml: &str,
    prefix: Option<&str>,
) -> anyhow::Result<Option<(String, u32)>> {
    let config: LifecycleConfiguration =
        quick_xml::de::from_str(xml).context("cannot read the bucket's lifecycle configuration")?;
    let wanted = rule_prefix(prefix);
    Ok(config.rules.into_iter().find_map(|rule| {
        let abort = rule.abort.as_ref()?;
        if !rule.status.eq_ignore_ascii_case("Enabled") {
            return None;
        }
        let covers = match &rule.filter {
            Some(f) => {
                f.tag.is_none()
                    && f.and.is_none()
                    && f.size_above.is_none()
                    && f.size_below.is_none()
                    && wanted.starts_with(f.prefix.as_deref().unwrap_or(""))
            }
            None => wanted.starts_with(rule.prefix.as_deref().unwrap_or("")),
        };
        covers.then(|| {
            (
                rule.id.clone().unwrap_or_else(|| "(no id)".to_owned()),
                abort.days,
            )
        })
    }))
}

/// `existing` (a bucket's lifecycle configuration, or `None`) with
/// Strata's rule added: the other rules stay as they are. Errors when
/// `existing` is not a lifecycle configuration.
pub fn lifecycle_with_abort_rule(
    existing: Option<&str>,
    prefix: Option<&str>,
) -> anyhow::Result<String> {
    const CLOSE: &str = "</LifecycleConfiguration>";
    let rule = abort_rule(prefix);
    match existing {
        None => Ok(format!(
            "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{rule}{CLOSE}"
        )),
        Some(xml) => {
            let Some(at) = xml.rfind(CLOSE) else {
                bail!("the bucket's lifecycle configuration has no {CLOSE}: {xml:.200}");
            };
            Ok(format!("{}{rule}{}", &xml[..at], &xml[at..]))
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_covers_its_prefix_and_is_added_beside_others() {
        let fresh = lifecycle_with_abort_rule(None, Some("dev")).unwrap();
        assert_eq!(
            covering_abort_rule(&fresh, Some("dev")).unwrap(),
            Some((RULE_ID.to_owned(), 1))
        );
        assert_eq!(covering_abort_rule(&fresh, Some("devx")).unwrap(), None);
        assert_eq!(covering_abort_rule(&fresh, None).unwrap(), None);

        let other = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
            <LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
            <Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>\
            <Expiration><Days>30</Days></Expiration></Rule></LifecycleConfiguration>";
        assert_eq!(covering_abort_rule(other, Some("dev")).unwrap(), None);
        let both = lifecycle_with_abort_rule(Some(other), Some("dev")).unwrap();
        assert!(both.contains("<ID>logs</ID>") && both.contains("<Days>30</Days>"));
        assert!(both.ends_with("</Rule></LifecycleConfiguration>"), "{both}");
        assert_eq!(
            covering_abort_rule(&both, Some("dev")).unwrap(),
            Some((RULE_ID.to_owned(), 1))
        );
        assert!(lifecycle_with_abort_rule(Some("<Other/>"), None).is_err());
    }

    #[test]
    fn bucket_wide_legacy_disabled_and_narrow_rules() {
        let rule = |body: &str| {
            format!(
                "<LifecycleConfiguration><Rule>{body}<AbortIncompleteMultipartUpload>\
                 <DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload>\
                 </Rule></LifecycleConfiguration>"
            )
        };
        let wide = rule("<Filter></Filter><Status>Enabled</Status>");
        assert_eq!(
            covering_abort_rule(&wide, Some("a/b")).unwrap(),
            Some(("(no id)".to_owned(), 7))
        );
        let legacy = rule("<ID>x</ID><Prefix>a/</Prefix><Status>Enabled</Status>");
        assert_eq!(
            covering_abort_rule(&legacy, Some("a/b")).unwrap(),
            Some(("x".to_owned(), 7))
        );
        let disabled = rule("<Filter><Prefix></Prefix></Filter><Status>Disabled</Status>");
        assert_eq!(covering_abort_rule(&disabled, None).unwrap(), None);
        let tagged = rule(
            "<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status>",
        );
        assert_eq!(covering_abort_rule(&tagged, None).unwrap(), None);
        assert!(covering_abort_rule("not xml <", None).is_err());
    }

    #[test]
    fn bucket_urls_are_object_stores() {
        let location = |endpoint: Option<&str>, virtual_hosted: bool| S3Location {
            bucket: "b".into(),
            prefix: None,
            builder: {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_region("eu-west-1")
                    .with_virtual_hosted_style_request(virtual_hosted);
                if let Some(e) = endpoint {
                    b = b.with_endpoint(e);
                }
                b
            },
        };
        assert_eq!(
            bucket_url(&location(Some("http://127.0.0.1:9000/"), false)),
            "http://127.0.0.1:9000/b"
        );
        assert_eq!(
            bucket_url(&location(None, false)),
            "https://s3.eu-west-1.amazonaws.com/b"
        );
        assert_eq!(
            bucket_url(&location(None, true)),
            "https://b.s3.eu-west-1.amazonaws.com"
        );
    }
}
