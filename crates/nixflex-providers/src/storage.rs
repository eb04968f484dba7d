//! Object storage for recordings (docs/recordings.md#where-recordings-live): a directory on the
//! server's disk or an S3-compatible bucket, behind one small interface over the `object_store`
//! crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt as _, PutPayload};
use secrecy::{ExposeSecret as _, SecretString};

/// How long one storage request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How a storage request failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The configuration cannot work (bad endpoint, empty bucket name).
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The store refused or failed (credentials, network, server error).
    #[error("{0}")]
    Failed(String),
    /// The requested byte range is outside the object.
    #[error("the range is outside the object's {size} bytes")]
    RangeNotSatisfiable {
        /// The object's size.
        size: u64,
    },
}

/// A byte range of an object (`Range: bytes=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-end`, both inclusive.
    Bounded(u64, u64),
    /// `start-`: to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The half-open range this selects of an object of `size` bytes, or `None` when it selects
    /// nothing (RFC 9110: unsatisfiable).
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        let range = match self {
            Self::Bounded(start, end) if start <= end => start..end.saturating_add(1).min(size),
            Self::Bounded(..) => return None,
            Self::From(start) => start..size,
            Self::Suffix(n) => size.saturating_sub(n)..size,
        };
        (range.start < range.end).then_some(range)
    }
}

/// An object being read: its size, the range being sent, and the bytes as a stream.
pub struct ObjectStream {
    /// The whole object's size.
    pub size: u64,
    /// The bytes the stream holds.
    pub range: std::ops::Range<u64>,
    /// The bytes.
    pub stream: futures::stream::BoxStream<'static, Result<Bytes, StorageError>>,
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStream")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish()
    }
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Failed(one_line(&other.to_string())),
        }
    }
}

/// Error texts from S3 can span lines (an XML body); keep them on one.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.len() > 300 {
        let mut end = 300;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &joined[..end])
    } else {
        joined
    }
}

/// An S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL (`https://…`); `None` is Amazon S3 in `region`.
    pub endpoint: Option<String>,
    /// Signing region (`auto` is accepted by most S3-compatible services).
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: SecretString,
    /// Allow a plain-http endpoint (local test servers only).
    pub allow_http: bool,
    /// Connect only to public addresses, checked after DNS resolution (an account's own
    /// bucket: its endpoint must not reach the server's private network).
    pub public_only: bool,
}

/// Builds the S3 client's HTTP client with a resolver that refuses non-public addresses.
#[derive(Debug)]
struct PublicOnlyConnector;

impl object_store::client::HttpConnector for PublicOnlyConnector {
    fn connect(
        &self,
        _options: &ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(crate::customer::PublicOnlyResolver))
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(object_store::client::HttpClient::new(client))
    }
}

/// A place to keep objects.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<dyn ObjectStore>,
    describe: String,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage").field("at", &self.describe).finish()
    }
}

impl ObjectStorage {
    /// Objects as files under `dir` (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn local(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StorageError::Config(e.to_string()))?
            // Deleting a recording leaves no empty per-account directories behind.
            .with_automatic_cleanup(true);
        Ok(Self { inner: Arc::new(store), describe: format!("directory {}", dir.display()) })
    }

    /// Objects in an S3-compatible bucket (path-style addressing, so any endpoint works).
    ///
    /// # Errors
    /// When the configuration is unusable (empty bucket, malformed endpoint).
    pub fn s3(config: &S3Config) -> Result<Self, StorageError> {
        if config.bucket.trim().is_empty() {
            return Err(StorageError::Config("the bucket name is empty".to_owned()));
        }
        let options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(Duration::from_secs(5))
            .with_allow_http(config.allow_http);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key)
            .with_secret_access_key(config.secret_key.expose_secret())
            .with_virtual_hosted_style_request(false)
            .with_client_options(options);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if config.public_only {
            builder = builder.with_http_connector(PublicOnlyConnector);
        }
        let store = builder.build().map_err(|e| StorageError::Config(one_line(&e.to_string())))?;
        let describe = format!(
            "bucket {} at {}",
            config.bucket,
            config.endpoint.as_deref().unwrap_or("Amazon S3")
        );
        Ok(Self { inner: Arc::new(store), describe })
    }

    /// Writes an object (replacing any at that path).
    ///
    /// # Errors
    /// When the store refuses or cannot be reached.
    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = object_path(path)?;
        self.inner.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// Reads an object.
    ///
    /// # Errors
    /// [`StorageError::NotFound`] when it does not exist; otherwise when the store fails.
    pub async fn get(&self, path: &str) -> Result<Bytes, StorageError> {
        let path = object_path(path)?;
        Ok(self.inner.get(&path).await?.bytes().await?)
    }

    /// Streams an object, or the part `range` selects, without holding it in memory.
    ///
    /// # Errors
    /// [`StorageError::NotFound`]; [`StorageError::RangeNotSatisfiable`] when `range` selects
    /// nothing; otherwise when the store fails.
    pub async fn stream(
        &self,
        path: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectStream, StorageError> {
        use futures::StreamExt as _;
        let path = object_path(path)?;
        let size = self.inner.head(&path).await?.size;
        let wanted = match range {
            None => 0..size,
            Some(range) => range.resolve(size).ok_or(StorageError::RangeNotSatisfiable { size })?,
        };
        let options = object_store::GetOptions {
            range: (wanted != (0..size)).then(|| object_store::GetRange::Bounded(wanted.clone())),
            ..object_store::GetOptions::default()
        };
        let result = self.inner.get_opts(&path, options).await?;
        let range = result.range.clone();
        let stream = result.into_stream().map(|chunk| chunk.map_err(StorageError::from)).boxed();
        Ok(ObjectStream { size, range, stream })
    }

    /// Deletes an object; deleting one that does not exist succeeds.
    ///
    /// # Errors
    /// When the store refuses or cannot be reached.
    pub async fn delete(&self, path: &str) -> Result<(), StorageError> {
        let path = object_path(path)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Proves the credentials work: writes a small object, reads it back and deletes it.
    ///
    /// # Errors
    /// The first step that failed, as [`StorageError::Failed`].
    pub async fn verify(&self, probe_path: &str) -> Result<(), StorageError> {
        let body = Bytes::from_static(b"nixflex storage check\n");
        self.put(probe_path, body.clone())
            .await
            .map_err(|e| StorageError::Failed(format!("test write failed: {e}")))?;
        let read = self
            .get(probe_path)
            .await
            .map_err(|e| StorageError::Failed(format!("test read failed: {e}")))?;
        if read != body {
            return Err(StorageError::Failed("test read returned other bytes".to_owned()));
        }
        self.delete(probe_path)
            .await
            .map_err(|e| StorageError::Failed(format!("test delete failed: {e}")))
    }
}

fn object_path(path: &str) -> Result<Path, StorageError> {
    Path::parse(path).map_err(|e| StorageError::Config(format!("object path `{path}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_objects_round_trip_and_delete_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStorage::local(dir.path().join("recordings")).unwrap();
        storage.put("acc_1/call_1.wav", Bytes::from_static(b"RIFF")).await.unwrap();
        assert_eq!(storage.get("acc_1/call_1.wav").await.unwrap(), Bytes::from_static(b"RIFF"));
        storage.delete("acc_1/call_1.wav").await.unwrap();
        assert!(matches!(storage.get("acc_1/call_1.wav").await, Err(StorageError::NotFound)));
        storage.delete("acc_1/call_1.wav").await.unwrap();
        storage.verify("probe/check.txt").await.unwrap();
    }

    #[tokio::test]
    async fn objects_stream_whole_or_by_range() {
        use futures::TryStreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStorage::local(dir.path()).unwrap();
        storage.put("a/b.wav", Bytes::from_static(b"0123456789")).await.unwrap();
        let read = |range| {
            let storage = storage.clone();
            async move {
                let object = storage.stream("a/b.wav", range).await?;
                let bytes: Vec<Bytes> = object.stream.try_collect().await?;
                Ok::<_, StorageError>((object.size, object.range, bytes.concat()))
            }
        };
        assert_eq!(read(None).await.unwrap(), (10, 0..10, b"0123456789".to_vec()));
        assert_eq!(
            read(Some(ByteRange::Bounded(2, 4))).await.unwrap(),
            (10, 2..5, b"234".to_vec())
        );
        assert_eq!(read(Some(ByteRange::From(7))).await.unwrap(), (10, 7..10, b"789".to_vec()));
        assert_eq!(read(Some(ByteRange::Suffix(2))).await.unwrap(), (10, 8..10, b"89".to_vec()));
        assert_eq!(read(Some(ByteRange::Bounded(8, 100))).await.unwrap().2, b"89".to_vec());
        assert!(matches!(
            read(Some(ByteRange::From(10))).await,
            Err(StorageError::RangeNotSatisfiable { size: 10 })
        ));
        assert!(matches!(
            read(Some(ByteRange::Bounded(5, 4))).await,
            Err(StorageError::RangeNotSatisfiable { .. })
        ));
        assert!(matches!(storage.stream("a/none.wav", None).await, Err(StorageError::NotFound)));
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        assert!(object_path("../etc/passwd").is_err());
    }
}
