//! Building an object store from a URL: `file:///path`, `memory://`, `s3://bucket/prefix`.
//!
//! - `file:///abs/path`: a [`LocalFileSystem`] rooted at that directory (created if missing). A
//!   relative path (`file://objects`, `file:objects`) is taken relative to the data directory, and an
//!   empty one (`file://`) means `{data_dir}/objects`.
//! - `memory://`: an [`InMemory`] store (tests; nothing survives the process).
//! - `s3://bucket[/prefix]`: [`AmazonS3`](object_store::aws::AmazonS3) with path-style requests,
//!   endpoint/region from [`S3Options`] or the `AWS_*` environment, plain HTTP allowed when the endpoint
//!   says `http://` (local S3-compatible servers). A prefix is applied with [`PrefixStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use crate::Result;

/// S3 settings that may come from the command line; unset ones fall back to the `AWS_*` environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:9000` for a local S3-compatible server.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
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
        let store = LocalFileSystem::new_with_prefix(&path)?;
        return Ok(Arc::new(store));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(invalid_url(url, "no bucket name"));
        }
        let store = s3_builder(bucket, s3).build()?;
        if prefix.is_empty() {
            return Ok(Arc::new(store));
        }
        return Ok(Arc::new(PrefixStore::new(store, prefix)));
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

fn s3_builder(bucket: &str, s3: &S3Options) -> AmazonS3Builder {
    // from_env picks up AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION / AWS_ENDPOINT...;
    // explicit options win.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    } else if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
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
    builder
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

    #[test]
    fn s3_urls_build_and_bad_urls_fail() {
        let dir = tempfile::tempdir().unwrap();
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
        };
        assert!(object_store_from_url("s3://bucket/some/prefix/", dir.path(), &opts).is_ok());
        assert!(object_store_from_url("s3://bucket", dir.path(), &opts).is_ok());
        assert!(object_store_from_url("s3:///nobucket", dir.path(), &opts).is_err());
        assert!(object_store_from_url("gopher://x", dir.path(), &opts).is_err());
    }
}
