//! The ceiling: the same bytes, already in memory, put straight into the same S3 server
//! with object_store (one PUT below the part size, a multipart upload of equal parts
//! above it), at the same number of transfers at once, and each recording's sidecar PUT
//! beside it (the same requests callvault makes per record), with the same checksums
//! callvault sends. Nothing to download, hash or record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::rig::{Rig, Server};

/// The recordings' bytes, generated once by the simulator's own content function.
pub async fn contents(names: &[String], size: u64) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let chunks: Vec<Bytes> = callvault::simulator::recording_bytes(name, size, 0..size)
            .try_collect()
            .await?;
        let mut whole = Vec::with_capacity(usize::try_from(size)?);
        for chunk in chunks {
            whole.extend_from_slice(&chunk);
        }
        out.push((name.clone(), Bytes::from(whole)));
    }
    Ok(out)
}

/// How the ceiling puts: transfers at once, part size, part uploads at once in each.
pub struct Upload {
    pub concurrency: usize,
    pub part_size: usize,
    pub parts_in_flight: usize,
}

/// callvault's S3 clients on `server`'s `bucket`, as `callvault::store` builds them: the
/// store's own (single PUTs and sidecars, `x-amz-checksum-sha256`, signed payload) and the
/// multipart one (`x-amz-checksum-crc64nvme` on each part, unsigned payload). Mirrors
/// `s3_clients` in src/store/mod.rs: change both together.
pub fn clients(
    rig: &Rig,
    server: Server,
    bucket: &str,
    part_size: usize,
) -> anyhow::Result<(Arc<dyn ObjectStore>, Arc<dyn ObjectStore>)> {
    let options: Vec<(String, String)> = rig
        .s3_env_on(server)
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let store = callvault::store::Store::open(&callvault::store::StoreConfig {
        s3: options,
        part_size,
        ..callvault::store::StoreConfig::new(format!("s3://{bucket}"))
    })?;
    let parts = rig
        .s3_builder(server, bucket)
        .with_unsigned_payload(true)
        .with_checksum_algorithm(object_store::aws::Checksum::CRC64NVME)
        .build()?;
    Ok((Arc::clone(store.object_store()), Arc::new(parts)))
}

/// Puts every object into `bucket` as `up` says. Returns the wall time.
pub async fn upload(
    rig: &Rig,
    server: Server,
    bucket: &str,
    objects: &[(String, Bytes)],
    up: &Upload,
) -> anyhow::Result<Duration> {
    let (s3, parts) = clients(rig, server, bucket, up.part_size)?;
    let started = Instant::now();
    futures::stream::iter(objects)
        .map(|(name, bytes)| {
            let (s3, parts) = (Arc::clone(&s3), Arc::clone(&parts));
            async move {
                let path = Path::from(format!("ceiling/{name}"));
                let sidecar = Path::from(format!("ceiling/{name}.json"));
                s3.put(&sidecar, PutPayload::from(Bytes::from_static(SIDECAR)))
                    .await
                    .with_context(|| format!("putting the sidecar of {name}"))?;
                let whole = bytes.len() < up.part_size;
                let client = if whole { s3.as_ref() } else { parts.as_ref() };
                put_one(client, &path, bytes.clone(), up)
                    .await
                    .with_context(|| format!("putting {name}"))
            }
        })
        .buffer_unordered(up.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// A sidecar's size and shape (callvault's are about this long).
pub const SIDECAR: &[u8] = br#"{"uuid":"0f3e2f5c-7d8a-4b6e-9a51-3c2d1e0f9a8b","company_code":"20000013","record_file":"20000013/2026/11/01/recording.wav","call_start":"2026-11-01T10:00:00Z","billsec":62,"object_key":"20000013/2026/11/01/recording.wav","size":131072,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","content_type":"audio/wav","etag":""b1946ac92492d2347c6235b4d2611184"","archived_at":"2026-11-30T05:00:00Z","run_id":"run-0f3e2f5c","source":{"provider":"callvault"}}"#;

async fn put_one(
    s3: &dyn ObjectStore,
    path: &Path,
    bytes: Bytes,
    up: &Upload,
) -> anyhow::Result<()> {
    let (part_size, parts_in_flight) = (up.part_size, up.parts_in_flight);
    if bytes.len() < part_size {
        s3.put(path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let mut writer = WriteMultipart::new_with_chunk_size(s3.put_multipart(path).await?, part_size);
    let mut rest = bytes;
    while !rest.is_empty() {
        writer.wait_for_capacity(parts_in_flight).await?;
        let n = rest.len().min(part_size);
        writer.put(rest.split_to(n));
    }
    writer.finish().await?;
    Ok(())
}
