//! Cluster identity lives in the object store: the first node creates `cluster.json` with a
//! create-if-absent PUT; every later node, including one started on an empty data dir, reads it.

use anyhow::{bail, Context};
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

const IDENTITY_KEY: &str = "cluster.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct ClusterIdentity {
    cluster_id: String,
    format_version: u32,
}

/// Returns the cluster id stored in the bucket, creating it from `requested` (or a new id) if absent.
pub(crate) async fn ensure(
    store: &dyn ObjectStore,
    requested: Option<&str>,
) -> anyhow::Result<String> {
    let key = Path::from(IDENTITY_KEY);
    let existing = read(store, &key).await?;
    let identity = match existing {
        Some(identity) => identity,
        None => {
            let fresh = ClusterIdentity {
                cluster_id: requested.map(str::to_string).unwrap_or_else(new_cluster_id),
                format_version: FORMAT_VERSION,
            };
            let body = serde_json::to_vec_pretty(&fresh)?;
            let options = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match store.put_opts(&key, PutPayload::from(body), options).await {
                Ok(_) => fresh,
                // Another node won the race (or the store does not support conditional PUTs and
                // reported the object as existing): use what is there.
                Err(object_store::Error::AlreadyExists { .. }) => read(store, &key)
                    .await?
                    .context("cluster.json vanished right after a conflicting create")?,
                Err(e) => return Err(e).context("cannot write cluster.json to the object store"),
            }
        }
    };
    if identity.format_version > FORMAT_VERSION {
        bail!(
            "the object store was written by a newer Sluice (format {}, this build knows {})",
            identity.format_version,
            FORMAT_VERSION
        );
    }
    if let Some(requested) = requested {
        if requested != identity.cluster_id {
            bail!(
                "--cluster-id {requested} does not match the cluster id {} stored in the object store",
                identity.cluster_id
            );
        }
    }
    Ok(identity.cluster_id)
}

async fn read(store: &dyn ObjectStore, key: &Path) -> anyhow::Result<Option<ClusterIdentity>> {
    match store.get(key).await {
        Ok(result) => {
            let bytes = result.bytes().await.context("cannot read cluster.json")?;
            let identity = serde_json::from_slice(&bytes).context("cluster.json is not valid")?;
            Ok(Some(identity))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).context("cannot read cluster.json from the object store"),
    }
}

/// A Kafka-style cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn first_node_creates_and_later_nodes_read_the_identity() {
        let store = InMemory::new();
        let first = ensure(&store, None).await.unwrap();
        assert_eq!(first.len(), 22);
        assert_eq!(ensure(&store, None).await.unwrap(), first);
        assert_eq!(ensure(&store, Some(&first)).await.unwrap(), first);
        assert!(ensure(&store, Some("other-cluster")).await.is_err());
    }

    #[tokio::test]
    async fn requested_id_is_used_for_a_new_cluster() {
        let store = InMemory::new();
        assert_eq!(
            ensure(&store, Some("my-cluster")).await.unwrap(),
            "my-cluster"
        );
    }
}
