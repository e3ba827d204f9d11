//! Streaming upload with hashing: a small recording goes up in one PUT, a large one as a
//! multipart upload, one part at a time (`PARTS_IN_FLIGHT`: the next chunk is read only
//! once no part is uploading, so memory is about one part per transfer, as BENCHMARKS.md
//! measures), aborted when the source fails or the run is cancelled. On S3 every
//! PUT carries a checksum (unless `checksums` is off), so a single PUT that succeeded was
//! checked by the server itself; multipart uploads are checked by a HEAD.
//!
//! Parts are sent as the chunks the download arrived in, not gathered into one buffer:
//! tried, it made no difference to the servers' CPU and cost memory (a fresh 8 MiB buffer
//! per part: peak RSS 69 → 125 MiB with four large transfers; BENCHMARKS.md "Issue 20").

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{MetadataSupport, Store, StoreError};
use crate::provider::DownloadError;
use crate::timefmt::to_ledger;

/// What the object carries besides its bytes.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    pub uuid: String,
    pub company_code: String,
    pub call_start: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
    /// The size the source announced (its `Content-Length`), which the body cannot exceed:
    /// below a part, the upload reserves just that much of the memory budget.
    pub size_hint: Option<u64>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub size: u64,
    pub sha256: String,
    pub etag: Option<String>,
    pub version: Option<String>,
    pub multipart: bool,
    /// The server checked the bytes against the SHA-256 sent with them (a single PUT with
    /// `x-amz-checksum-sha256`): no HEAD is needed to trust what it holds.
    pub checked_by_store: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError<E = DownloadError> {
    #[error(transparent)]
    Source(E),
    #[error(transparent)]
    Store(StoreError),
    #[error("cancelled by shutdown")]
    Cancelled,
}

/// Parts uploading at once within one transfer, besides the one being filled.
const PARTS_IN_FLIGHT: usize = 1;

/// The bytes read so far: their SHA-256, as it goes, and how many.
#[derive(Default)]
struct Hashed {
    hasher: Sha256,
    size: u64,
}

impl Hashed {
    fn add(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
    }
}

/// The start of a body, up to one part: all of it when `ended`.
struct FirstPart {
    hashed: Hashed,
    chunks: Vec<Bytes>,
    ended: bool,
}

impl Store {
    /// Streams a recording to `key`, hashing as it goes. Nothing is left behind on failure:
    /// a multipart upload is aborted, a single PUT is never started.
    pub async fn upload<S>(
        &self,
        key: &str,
        body: S,
        meta: &UploadMeta,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, UploadError>
    where
        S: Stream<Item = Result<Bytes, DownloadError>> + Unpin + Send,
    {
        let mut uploaded = self
            .put_streamed(
                key,
                body,
                meta.size_hint,
                |sha| self.attributes(meta, sha),
                cancel,
            )
            .await?;
        // A multipart upload's SHA-256 is known only at its end. The sidecar carries it
        // beside the object; without sidecars, the object is copied onto itself with it
        // in its metadata, which a server holding a checksum rewrites in full (Garage and
        // S3 recompute a multipart object's checksum on copy), so only then.
        if let Some(s3) = self
            .s3
            .as_ref()
            .filter(|_| uploaded.multipart && !self.sidecars)
        {
            let pairs = metadata_pairs(meta, Some(&uploaded.sha256));
            let path = self.path(key).map_err(UploadError::Store)?;
            let (etag, version) = s3
                .replace_metadata(&path, meta.content_type.as_deref(), &pairs)
                .await
                .map_err(UploadError::Store)?;
            uploaded.etag = etag.or(uploaded.etag);
            uploaded.version = version.or(uploaded.version);
        }
        if self.metadata == MetadataSupport::BesideObject && !self.sidecars {
            self.write_metadata_file(key, meta, &uploaded.sha256, uploaded.size)
                .await
                .map_err(UploadError::Store)?;
        }
        Ok(uploaded)
    }

    /// Streams any body (a manifest, say) to `key` with a content type, hashing as it goes.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        content_type: &str,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    {
        let attributes = || {
            let mut attrs = Attributes::new();
            if self.metadata == MetadataSupport::Attributes {
                attrs.insert(Attribute::ContentType, content_type.to_owned().into());
            }
            attrs
        };
        self.put_streamed(key, body, None, |_| attributes(), cancel)
            .await
    }

    /// The streaming engine: one PUT when the body fits in a part, else a multipart upload.
    /// `attributes` gets the SHA-256 when it is known before the object is written. The
    /// memory budget is reserved first (see `budget.rs`) and held to the end.
    async fn put_streamed<S, E>(
        &self,
        key: &str,
        mut body: S,
        size_hint: Option<u64>,
        attributes: impl Fn(Option<&str>) -> Attributes,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    {
        let path = self.path(key).map_err(UploadError::Store)?;
        let _held = self
            .budget
            .reserve(self.buffer_for(size_hint), cancel)
            .await
            .ok_or(UploadError::Cancelled)?;
        let first = self.first_part(&mut body, cancel).await?;
        if first.ended {
            self.put_single(key, &path, first, attributes).await
        } else {
            self.put_multipart(key, &path, first, body, attributes(None), cancel)
                .await
        }
    }

    /// The upload buffers a body of `size_hint` bytes needs: itself below a part (one PUT
    /// from memory), else the part filling and the part uploading (`PARTS_IN_FLIGHT`).
    fn buffer_for(&self, size_hint: Option<u64>) -> usize {
        match size_hint.and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n < self.part_size => n,
            _ => self.part_size * (1 + PARTS_IN_FLIGHT),
        }
    }

    /// Reads the body until it fills a part or ends, which decides between one PUT and a
    /// multipart upload.
    async fn first_part<S, E>(
        &self,
        body: &mut S,
        cancel: &CancellationToken,
    ) -> Result<FirstPart, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    {
        let mut first = FirstPart {
            hashed: Hashed::default(),
            chunks: Vec::new(),
            ended: false,
        };
        let mut buffered = 0usize;
        while buffered < self.part_size {
            match next_chunk(body, cancel).await? {
                Some(chunk) => {
                    first.hashed.add(&chunk);
                    buffered += chunk.len();
                    first.chunks.push(chunk);
                }
                None => {
                    first.ended = true;
                    break;
                }
            }
        }
        Ok(first)
    }

    /// The whole body, read into `first`, in one PUT that carries its SHA-256.
    async fn put_single<E>(
        &self,
        key: &str,
        path: &Path,
        first: FirstPart,
        attributes: impl Fn(Option<&str>) -> Attributes,
    ) -> Result<Uploaded, UploadError<E>> {
        let size = first.hashed.size;
        let sha256 = hex::encode(first.hashed.hasher.finalize());
        let opts = PutOptions {
            attributes: attributes(Some(&sha256)),
            ..Default::default()
        };
        let result = self
            .inner
            .put_opts(path, PutPayload::from_iter(first.chunks), opts)
            .await
            .map_err(|e| UploadError::Store(StoreError::classify(format!("uploading {key}"), e)))?;
        Ok(Uploaded {
            size,
            sha256,
            etag: result.e_tag,
            version: result.version,
            multipart: false,
            checked_by_store: self.checksums,
        })
    }

    /// A multipart upload of `first` and the rest of `body`, aborted if either fails.
    async fn put_multipart<S, E>(
        &self,
        key: &str,
        path: &Path,
        first: FirstPart,
        mut body: S,
        attributes: Attributes,
        cancel: &CancellationToken,
    ) -> Result<Uploaded, UploadError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    {
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let upload = self
            .bulk
            .put_multipart_opts(path, opts)
            .await
            .map_err(|e| {
                UploadError::Store(StoreError::classify(
                    format!("starting a multipart upload of {key}"),
                    e,
                ))
            })?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        for chunk in first.chunks {
            writer.put(chunk);
        }
        let mut hashed = first.hashed;
        loop {
            let step = async {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| {
                        UploadError::Store(StoreError::classify(
                            format!("uploading a part of {key}"),
                            e,
                        ))
                    })?;
                next_chunk(&mut body, cancel).await
            };
            match step.await {
                Ok(Some(chunk)) => {
                    hashed.add(&chunk);
                    writer.put(chunk);
                }
                Ok(None) => break,
                Err(err) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(key, error = %abort, "could not abort a multipart upload");
                    }
                    return Err(err);
                }
            }
        }
        // The parts went up with our credentials just now: a refusal here is about the
        // upload's state (an answer lost, then the abort of a completed upload refused),
        // not about access, so it is passing, never a reason to stop the run.
        let result = writer.finish().await.map_err(|e| {
            UploadError::Store(StoreError::Transient {
                context: format!("completing the upload of {key}"),
                source: e,
            })
        })?;
        Ok(Uploaded {
            size: hashed.size,
            sha256: hex::encode(hashed.hasher.finalize()),
            etag: result.e_tag,
            version: result.version,
            multipart: true,
            checked_by_store: false,
        })
    }

    fn attributes(&self, meta: &UploadMeta, sha256: Option<&str>) -> Attributes {
        let mut attrs = Attributes::new();
        if self.metadata == MetadataSupport::Attributes {
            if let Some(ct) = &meta.content_type {
                attrs.insert(Attribute::ContentType, ct.clone().into());
            }
            for (name, value) in metadata_pairs(meta, sha256) {
                attrs.insert(Attribute::Metadata(name.into()), value.into());
            }
        }
        if let Some(class) = self.storage_class {
            attrs.insert(Attribute::StorageClass, class.as_str().into());
        }
        attrs
    }
}

/// The user metadata every archived object carries.
pub(crate) fn metadata_pairs(
    meta: &UploadMeta,
    sha256: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        ("call-uuid", meta.uuid.clone()),
        ("company-code", meta.company_code.clone()),
    ];
    if let Some(start) = meta.call_start {
        pairs.push(("call-start", to_ledger(start)));
    }
    if let Some(sha) = sha256 {
        pairs.push(("sha256", sha.to_owned()));
    }
    pairs
}

async fn next_chunk<S, E>(
    body: &mut S,
    cancel: &CancellationToken,
) -> Result<Option<Bytes>, UploadError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(UploadError::Cancelled),
        item = body.next() => item.transpose().map_err(UploadError::Source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use object_store::ObjectStoreExt;
    use proptest::prelude::*;

    fn meta() -> UploadMeta {
        UploadMeta {
            uuid: "u".into(),
            company_code: "c".into(),
            call_start: None,
            content_type: Some("audio/wav".into()),
            size_hint: None,
        }
    }

    /// Uploads `data` cut into `cuts`-sized chunks through a store with `part` bytes per part.
    async fn upload(data: &[u8], cuts: &[usize], part: usize) -> (Uploaded, Vec<u8>) {
        let store = Store::open(&StoreConfig {
            part_size: part,
            ..StoreConfig::new("memory:///prefix")
        })
        .unwrap();
        let mut chunks = Vec::new();
        let mut rest = data;
        for &n in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = n.clamp(1, rest.len());
            chunks.push(Ok(Bytes::copy_from_slice(&rest[..n])));
            rest = &rest[n..];
        }
        let body = futures::stream::iter(chunks);
        let uploaded = store
            .upload("a/b.wav", body, &meta(), &CancellationToken::new())
            .await
            .unwrap();
        let stored = store
            .object_store()
            .get(&store.path("a/b.wav").unwrap())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        (uploaded, stored.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn streaming_hash_and_bytes_equal_one_shot(data in proptest::collection::vec(any::<u8>(), 0..5000),
                                                  cuts in proptest::collection::vec(1usize..700, 1..8),
                                                  part in 64usize..2048) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (uploaded, stored) = rt.block_on(upload(&data, &cuts, part));
            prop_assert_eq!(&uploaded.sha256, &hex::encode(Sha256::digest(&data)));
            prop_assert_eq!(uploaded.size, data.len() as u64);
            prop_assert_eq!(uploaded.multipart, data.len() >= part);
            prop_assert_eq!(stored, data);
        }
    }

    /// An upload holds its share of the memory budget from before its first byte to its
    /// end: a body announced below a part its size, any other two parts; two large ones
    /// wait for each other when the budget holds only one.
    #[tokio::test]
    async fn uploads_hold_the_memory_budget_while_they_run() {
        let budget = crate::store::MemoryBudget::new(4096);
        let store = Store::open(&StoreConfig {
            part_size: 1024,
            memory_budget: budget.clone(),
            ..StoreConfig::new("memory:///")
        })
        .unwrap();
        assert_eq!(store.buffer_for(Some(300)), 300);
        assert_eq!(store.buffer_for(Some(1024)), 2048);
        assert_eq!(store.buffer_for(None), 2048);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = Ok::<_, DownloadError>(Bytes::from(vec![1u8; 300]));
        let body = futures::stream::once(async { first })
            .chain(futures::stream::once(async move {
                rx.await.ok();
                Ok(Bytes::from(vec![2u8; 1000]))
            }))
            .boxed();
        let held = tokio::spawn({
            let store = store.clone();
            async move {
                let meta = meta();
                store
                    .upload("big.wav", body, &meta, &CancellationToken::new())
                    .await
            }
        });
        while budget.available() == 4096 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            budget.available(),
            2048,
            "a body of unknown size holds two parts"
        );
        let small = UploadMeta {
            size_hint: Some(500),
            ..meta()
        };
        let body = futures::stream::iter(vec![Ok(Bytes::from(vec![3u8; 500]))]);
        let cancel = CancellationToken::new();
        store
            .upload("small.wav", body, &small, &cancel)
            .await
            .unwrap();
        assert_eq!(
            budget.available(),
            2048,
            "the small one gave its share back"
        );
        tx.send(()).unwrap();
        assert_eq!(held.await.unwrap().unwrap().size, 1300);
        assert_eq!(budget.available(), 4096);
    }

    #[tokio::test]
    async fn a_failing_source_leaves_nothing_behind() {
        let store = Store::open(&StoreConfig {
            part_size: 100,
            ..StoreConfig::new("memory:///")
        })
        .unwrap();
        let chunks: Vec<Result<Bytes, DownloadError>> = vec![
            Ok(Bytes::from(vec![1u8; 150])),
            Ok(Bytes::from(vec![2u8; 150])),
            Err(DownloadError::Truncated {
                received: 300,
                expected: 900,
            }),
        ];
        let err = store
            .upload(
                "x.wav",
                futures::stream::iter(chunks),
                &meta(),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            UploadError::Source(DownloadError::Truncated { .. })
        ));
        assert_eq!(store.size_of("x.wav").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_cancelled_upload_stops_and_leaves_nothing_behind() {
        let store = Store::open(&StoreConfig {
            part_size: 100,
            ..StoreConfig::new("memory:///")
        })
        .unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let body = futures::stream::iter(vec![Ok(Bytes::from(vec![0u8; 500]))]);
        let err = store
            .upload("y.wav", body, &meta(), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::Cancelled));
        assert_eq!(store.size_of("y.wav").await.unwrap(), None);
    }
}
