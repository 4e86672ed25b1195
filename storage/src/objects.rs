//! Building an object store from a URL: `file:///path`, `memory://`, `s3://bucket/prefix`.
//!
//! - `file:///abs/path`: a [`LocalFileSystem`] rooted at that directory (created if missing). A
//!   relative path (`file://objects`, `file:objects`) is taken relative to the data directory, and an
//!   empty one (`file://`) means `{data_dir}/objects`. Writes are fsynced (file and directory) before
//!   they return, as S3 acknowledges only durable objects.
//! - `memory://`: an [`InMemory`] store (tests; nothing survives the process).
//! - `s3://bucket[/prefix]`: [`AmazonS3`](object_store::aws::AmazonS3) with path-style requests,
//!   endpoint/region from [`S3Options`] or the `AWS_*` environment, plain HTTP allowed when the endpoint
//!   says `http://` (local S3-compatible servers). A prefix is applied with [`PrefixStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::Result;

/// Default bound on establishing a TCP (+TLS) connection to the S3 endpoint.
pub const DEFAULT_S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on one HTTP request, from connecting until the whole response body is read.
pub const DEFAULT_S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of retries of one request (5xx, 429, 408, 503 SlowDown, connect errors, timeouts
/// of idempotent requests).
pub const DEFAULT_S3_MAX_RETRIES: usize = 10;
/// Default bound on the whole retry loop of one request; kept well below the 5 minutes after which a
/// SigV4 signature expires, because object_store retries without re-signing.
pub const DEFAULT_S3_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default first backoff; later ones grow by [`S3_BACKOFF_BASE`] with jitter.
pub const DEFAULT_S3_INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Default cap of one backoff sleep.
pub const DEFAULT_S3_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Growth factor of the backoff. object_store draws each sleep uniformly from
/// `initial..previous * base` (decorrelated jitter), capped at the maximum backoff.
pub const S3_BACKOFF_BASE: f64 = 2.0;

/// S3 settings that may come from the command line or the TOML file; unset credentials, endpoint
/// and region fall back to the `AWS_*` environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT`/`AWS_ENDPOINT_URL`).
///
/// Nothing here is specific to one server: the same settings work for AWS S3, MinIO and s3s-fs
/// (path-style requests, SigV4, plain HTTP only when the endpoint URL says `http://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for a local S3-compatible server; unset means AWS S3.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Temporary credentials (STS) come with a session token.
    pub session_token: Option<String>,
    /// Bound on connecting to the endpoint.
    pub connect_timeout: Duration,
    /// Bound on one request attempt (connect + send + whole response).
    pub request_timeout: Duration,
    /// Retries of one request after the first attempt; 0 disables retries.
    pub max_retries: usize,
    /// No retry starts after this much time since the first attempt.
    pub retry_timeout: Duration,
    /// First backoff sleep between attempts.
    pub initial_backoff: Duration,
    /// Cap of one backoff sleep.
    pub max_backoff: Duration,
    /// Sign requests with `UNSIGNED-PAYLOAD` instead of the SHA-256 of the body (SigV4): saves
    /// hashing every PUT (a WAL object per group commit), at the cost of the signature no longer
    /// covering the body — use it over HTTPS, where TLS protects the bytes. Off by default.
    /// `AWS_UNSIGNED_PAYLOAD=true` in the environment turns it on as well.
    pub unsigned_payload: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            connect_timeout: DEFAULT_S3_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_S3_REQUEST_TIMEOUT,
            max_retries: DEFAULT_S3_MAX_RETRIES,
            retry_timeout: DEFAULT_S3_RETRY_TIMEOUT,
            initial_backoff: DEFAULT_S3_INITIAL_BACKOFF,
            max_backoff: DEFAULT_S3_MAX_BACKOFF,
            unsigned_payload: false,
        }
    }
}

impl S3Options {
    /// The retry policy handed to object_store. It retries 5xx (including 503 SlowDown), 429,
    /// 408, a 200 whose body says `InternalError`/`SlowDown`, connection errors, and timeouts of
    /// idempotent requests (GET/HEAD/DELETE, overwriting PUTs, multipart parts) — not timeouts of a
    /// create-if-absent PUT, whose outcome is unknown after a timeout.
    pub fn retry_config(&self) -> RetryConfig {
        let initial_backoff = self.initial_backoff.max(Duration::from_millis(1));
        RetryConfig {
            backoff: BackoffConfig {
                // object_store draws each sleep from `init..next * base`: a zero first sleep, or a
                // cap below it, would make that range empty, which panics in the RNG.
                init_backoff: initial_backoff,
                max_backoff: self.max_backoff.max(initial_backoff),
                base: S3_BACKOFF_BASE,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }
}

fn invalid_url(url: &str, reason: impl std::fmt::Display) -> crate::Error {
    crate::Error::ObjectStore(object_store::Error::Generic {
        store: "url",
        source: format!("invalid object store URL {url:?}: {reason}").into(),
    })
}

/// Builds the object store named by `url` (see the module docs for the schemes).
pub fn object_store_from_url(
    url: &str,
    data_dir: &Path,
    s3: &S3Options,
) -> Result<Arc<dyn ObjectStore>> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(InMemory::new()));
    }
    if let Some(rest) = url.strip_prefix("file:") {
        let path = local_path(rest, data_dir);
        std::fs::create_dir_all(&path)
            .map_err(|e| invalid_url(url, format!("cannot create {}: {e}", path.display())))?;
        // fsync each written object and its directory before the write returns: the file WAL is
        // truncated once a segment object is written, so that object must be as durable as the
        // WAL it replaces (object_store's default skips the fsync).
        let store = LocalFileSystem::new_with_prefix(&path)?.with_fsync(true);
        return Ok(Arc::new(store));
    }
    if url.starts_with("s3://") {
        let location = S3Location::parse(url)?;
        let store = s3_builder(&location.bucket, s3).build()?;
        if location.prefix.is_empty() {
            return Ok(Arc::new(store));
        }
        return Ok(Arc::new(PrefixStore::new(store, location.prefix.as_str())));
    }
    Err(invalid_url(url, "expected file://, memory:// or s3://"))
}

/// `file:` URL remainder → directory. `//` introduces the (absolute) path; anything else is relative
/// to the data directory.
fn local_path(rest: &str, data_dir: &Path) -> PathBuf {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return data_dir.join("objects");
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        data_dir.join(path)
    }
}

/// Bucket and key prefix of an `s3://bucket[/prefix]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading/trailing `/`; empty for the bucket root.
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`. Bucket names are checked only for what would break request
    /// URLs (empty, `/`, `?`, `#`, whitespace); the server judges the rest, since naming rules
    /// differ between AWS (legacy names) and S3-compatible servers.
    pub fn parse(url: &str) -> Result<S3Location> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid_url(url, "expected s3://bucket[/prefix]"))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(invalid_url(url, "no bucket name"));
        }
        let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#');
        if bucket.contains(bad) || prefix.contains(bad) {
            return Err(invalid_url(
                url,
                "bucket and prefix must not contain whitespace, '?' or '#'",
            ));
        }
        // object_store's paths refuse these parts; say so here instead of at the first request.
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(invalid_url(
                url,
                "prefix must not contain empty, '.' or '..' parts",
            ));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

fn s3_builder(bucket: &str, s3: &S3Options) -> AmazonS3Builder {
    // from_env picks up AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN / AWS_REGION /
    // AWS_ENDPOINT / AWS_ALLOW_HTTP and client settings such as AWS_PROXY_URL; explicit options win.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        // Path-style (`endpoint/bucket/key`): works on AWS and on every S3-compatible server
        // without wildcard DNS for bucket subdomains.
        .with_virtual_hosted_style_request(false)
        .with_retry(s3.retry_config())
        // Set key by key rather than `with_client_options`, which would drop the client settings
        // `from_env` read (proxy, TLS).
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            duration_setting(s3.connect_timeout),
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            duration_setting(s3.request_timeout),
        );
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    // Plain HTTP only when the endpoint itself says so (a local or in-cluster server); an https://
    // endpoint or AWS itself never falls back to HTTP.
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if endpoint.is_some_and(|e| e.to_ascii_lowercase().starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    } else if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        // S3-compatible servers ignore the region, but SigV4 needs one.
        builder = builder.with_region("us-east-1");
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token);
    }
    if s3.unsigned_payload {
        builder = builder.with_unsigned_payload(true);
    }
    builder
}

/// A duration in the form object_store's config parser (humantime) reads back exactly.
fn duration_setting(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

/// Checks that `store` really refuses to create an object that exists (`PutMode::Create`: S3's
/// `If-None-Match: *`): creates a fresh probe key twice, and the second create must fail with
/// `AlreadyExists` (412/409). The bucket metadata log depends on it — a store that silently
/// overwrites would let two processes fork the log — so a start on such a store is refused.
/// `Err` holds the reason; the probe object is deleted afterwards (best effort).
pub async fn check_create_if_absent(store: &dyn ObjectStore) -> std::result::Result<(), String> {
    use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
    let key = object_store::path::Path::from(format!(
        "probe/create-if-absent-{:032x}",
        rand::random::<u128>()
    ));
    let create = || {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store.put_opts(&key, PutPayload::from_static(b"probe"), options)
    };
    let outcome = match create().await {
        Err(error) => Err(format!(
            "a create-if-absent PUT of a new key failed: {error}"
        )),
        Ok(_) => match create().await {
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Ok(_) => Err(
                "a second create-if-absent PUT of the same key succeeded: the store ignores \
                 If-None-Match, so two processes could both write one metadata log object"
                    .to_owned(),
            ),
            Err(error) => Err(format!(
                "a second create-if-absent PUT of the same key failed with an unexpected error \
                 (expected AlreadyExists/412): {error}"
            )),
        },
    };
    if let Err(error) = store.delete(&key).await {
        tracing::warn!(%key, %error, "could not delete the create-if-absent probe object");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path as ObjectPath;
    use object_store::ObjectStoreExt;

    async fn put_get(store: &Arc<dyn ObjectStore>) {
        let key = ObjectPath::from("a/b/c.seg");
        store
            .put(&key, bytes::Bytes::from_static(b"hello").into())
            .await
            .unwrap();
        let got = store.get_range(&key, 1..4).await.unwrap();
        assert_eq!(&got[..], b"ell");
    }

    /// A store that ignores create-if-absent (overwrites), as some S3-compatible servers do.
    #[derive(Debug)]
    struct IgnoresCreate(InMemory);

    impl std::fmt::Display for IgnoresCreate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "IgnoresCreate")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for IgnoresCreate {
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: object_store::PutPayload,
            _opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0.put(location, payload).await
        }
        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &ObjectPath,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
            self.0.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.0.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjectPath>,
        ) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn the_create_if_absent_probe_refuses_a_store_that_overwrites() {
        use futures::TryStreamExt;
        let honest = InMemory::new();
        assert_eq!(check_create_if_absent(&honest).await, Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let file = object_store_from_url(
            &format!("file://{}", dir.path().join("o").display()),
            dir.path(),
            &S3Options::default(),
        )
        .unwrap();
        assert_eq!(check_create_if_absent(file.as_ref()).await, Ok(()));
        let liar = IgnoresCreate(InMemory::new());
        let refused = check_create_if_absent(&liar).await.unwrap_err();
        assert!(refused.contains("ignores If-None-Match"), "{refused}");
        // The probe leaves nothing behind.
        for store in [&honest as &dyn ObjectStore, &liar.0, file.as_ref()] {
            let left: Vec<_> = store.list(None).try_collect().await.unwrap();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[tokio::test]
    async fn memory_and_file_stores() {
        let dir = tempfile::tempdir().unwrap();
        let mem = object_store_from_url("memory://", dir.path(), &S3Options::default()).unwrap();
        put_get(&mem).await;

        let root = dir.path().join("objs");
        let url = format!("file://{}", root.display());
        let file = object_store_from_url(&url, dir.path(), &S3Options::default()).unwrap();
        put_get(&file).await;
        assert!(root.join("a/b/c.seg").exists());

        let relative = object_store_from_url("file://", dir.path(), &S3Options::default()).unwrap();
        put_get(&relative).await;
        assert!(dir.path().join("objects/a/b/c.seg").exists());
    }

    fn local_s3_options() -> S3Options {
        S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("eu-west-3".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..S3Options::default()
        }
    }

    #[test]
    fn s3_urls_build_and_bad_urls_fail() {
        let dir = tempfile::tempdir().unwrap();
        let opts = local_s3_options();
        assert!(object_store_from_url("s3://bucket/some/prefix/", dir.path(), &opts).is_ok());
        assert!(object_store_from_url("s3://bucket", dir.path(), &opts).is_ok());
        assert!(object_store_from_url("s3:///nobucket", dir.path(), &opts).is_err());
        assert!(object_store_from_url("s3://bu cket/x", dir.path(), &opts).is_err());
        assert!(object_store_from_url("gopher://x", dir.path(), &opts).is_err());
    }

    #[test]
    fn s3_location_parsing() {
        let parse = |url: &str| S3Location::parse(url).map(|l| (l.bucket, l.prefix));
        let ok = |b: &str, p: &str| (b.to_string(), p.to_string());
        assert_eq!(parse("s3://b").unwrap(), ok("b", ""));
        assert_eq!(parse("s3://b/").unwrap(), ok("b", ""));
        assert_eq!(parse("s3://b/p").unwrap(), ok("b", "p"));
        assert_eq!(parse("s3://b//p/q//").unwrap(), ok("b", "p/q"));
        assert_eq!(
            parse("s3://my.bucket-1/a/b/c").unwrap(),
            ok("my.bucket-1", "a/b/c")
        );
        for bad in [
            "s3://",
            "s3:///p",
            "s3://b?x=1",
            "s3://b/p#f",
            "s3://b/p q",
            "s3://b/a//c",
            "s3://b/a/../c",
            "s3://b/./c",
            "file:///x",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn s3_builder_applies_endpoint_region_credentials_and_client_settings() {
        let opts = S3Options {
            session_token: Some("t".into()),
            connect_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(3),
            ..local_s3_options()
        };
        let builder = s3_builder("bkt", &opts);
        let get = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        assert_eq!(get(AmazonS3ConfigKey::Bucket).as_deref(), Some("bkt"));
        assert_eq!(
            get(AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(get(AmazonS3ConfigKey::Region).as_deref(), Some("eu-west-3"));
        assert_eq!(get(AmazonS3ConfigKey::AccessKeyId).as_deref(), Some("k"));
        assert_eq!(
            get(AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some("s")
        );
        assert_eq!(get(AmazonS3ConfigKey::Token).as_deref(), Some("t"));
        assert_eq!(
            get(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref(),
            Some("false")
        );
        let client = |key: ClientConfigKey| get(AmazonS3ConfigKey::Client(key));
        assert_eq!(client(ClientConfigKey::AllowHttp).as_deref(), Some("true"));
        assert_eq!(
            client(ClientConfigKey::ConnectTimeout).as_deref(),
            Some("250ms")
        );
        assert_eq!(client(ClientConfigKey::Timeout).as_deref(), Some("3000ms"));
        builder.build().unwrap();
    }

    #[test]
    fn https_endpoints_never_allow_plain_http() {
        let opts = S3Options {
            endpoint: Some("https://s3.example.com".into()),
            ..local_s3_options()
        };
        let builder = s3_builder("bkt", &opts);
        let allow_http =
            builder.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        // Unset (when AWS_ALLOW_HTTP is not in the environment) or "false": never forced on.
        assert_ne!(allow_http.as_deref(), Some("true"));
    }

    #[test]
    fn retry_config_follows_options_and_never_builds_an_empty_backoff_range() {
        let opts = S3Options {
            max_retries: 3,
            retry_timeout: Duration::from_secs(7),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(400),
            ..S3Options::default()
        };
        let retry = opts.retry_config();
        assert_eq!(retry.max_retries, 3);
        assert_eq!(retry.retry_timeout, Duration::from_secs(7));
        assert_eq!(retry.backoff.init_backoff, Duration::from_millis(20));
        assert_eq!(retry.backoff.max_backoff, Duration::from_millis(400));
        assert_eq!(retry.backoff.base, S3_BACKOFF_BASE);

        let degenerate = S3Options {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..S3Options::default()
        }
        .retry_config();
        assert!(degenerate.backoff.init_backoff > Duration::ZERO);
        assert!(degenerate.backoff.max_backoff >= degenerate.backoff.init_backoff);

        let defaults = S3Options::default();
        assert_eq!(defaults.connect_timeout, DEFAULT_S3_CONNECT_TIMEOUT);
        assert_eq!(defaults.request_timeout, DEFAULT_S3_REQUEST_TIMEOUT);
        assert!(defaults.retry_timeout < Duration::from_secs(300));
    }
}
