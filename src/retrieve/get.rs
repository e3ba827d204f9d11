//! `callvault get`: recordings copied from the store into files, the SHA-256 recomputed
//! while streaming. The bytes go to a hidden `.NAME.part` file and are renamed into place
//! only when their checksum and size match the ledger's; a mismatch (or a failed read)
//! removes the partial file. Memory holds one chunk of the store's stream at a time.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Archived, Requester, RetrieveError, archived};
use crate::domain::{ArchivedObject, CallUuid};
use crate::ledger::{AccessAction, Ledger};
use crate::store::{Sidecar, Store};

/// One recording copied out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fetched {
    pub uuid: CallUuid,
    pub path: PathBuf,
    pub sidecar: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Copies the recordings of `uuids` into `dir` (created if missing), one after another;
/// one call's failure does not stop the others. The access log gets one entry naming every
/// call asked for, before any byte is written.
pub async fn get_recordings(
    ledger: &Ledger,
    store: &Store,
    uuids: &[CallUuid],
    dir: &Path,
    who: &Requester,
) -> Result<Vec<Result<Fetched, RetrieveError>>, RetrieveError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| RetrieveError::File {
            path: dir.to_owned(),
            source,
        })?;
    let query = format!("output={}", dir.display());
    ledger
        .log_access(&who.entry(AccessAction::Get, Some(query), uuids.to_vec()))
        .await?;
    let mut results = Vec::with_capacity(uuids.len());
    for uuid in uuids {
        results.push(get_one(ledger, store, uuid, dir).await);
    }
    Ok(results)
}

async fn get_one(
    ledger: &Ledger,
    store: &Store,
    uuid: &CallUuid,
    dir: &Path,
) -> Result<Fetched, RetrieveError> {
    let object = archived(ledger, uuid).await?;
    let name = file_name(&object.key, uuid);
    let path = dir.join(&name);
    let (size, sha256) = copy_checked(store, uuid, &object, &path).await?;
    let sidecar = dir.join(format!("{name}{}", crate::store::SIDECAR_SUFFIX));
    write_sidecar(store, ledger.account(), &object, &sidecar).await?;
    Ok(Fetched {
        uuid: uuid.clone(),
        path,
        sidecar,
        size,
        sha256,
    })
}

/// The file name a recording is written under: the last part of its key (never a path).
fn file_name(key: &str, uuid: &CallUuid) -> String {
    key.rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map_or_else(|| uuid.to_string(), str::to_owned)
}

/// Where a file is written before it is known good.
fn part_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.part"))
}

/// Streams the object into `path`, hashing; renames it into place only if it matches.
async fn copy_checked(
    store: &Store,
    uuid: &CallUuid,
    object: &Archived,
    path: &Path,
) -> Result<(u64, String), RetrieveError> {
    let part = part_path(path);
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RetrieveError::File { path, source }
    };
    let mut body = store
        .read(&object.key)
        .await?
        .ok_or_else(|| RetrieveError::Missing {
            uuid: uuid.clone(),
            key: object.key.clone(),
        })?;
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(file_err(&part))?;
    let copied = async {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(file_err(&part))?;
        }
        file.flush().await.map_err(file_err(&part))?;
        file.sync_all().await.map_err(file_err(&part))?;
        Ok::<_, RetrieveError>((size, hex::encode(hasher.finalize())))
    }
    .await;
    drop(file);
    let checked = copied.and_then(|(size, sha256)| {
        if sha256 == object.sha256 && size == object.size {
            Ok((size, sha256))
        } else {
            Err(RetrieveError::Mismatch {
                uuid: uuid.clone(),
                key: object.key.clone(),
                expected: object.sha256.clone(),
                expected_size: object.size,
                actual: sha256,
                actual_size: size,
            })
        }
    });
    match checked {
        Ok(done) => {
            tokio::fs::rename(&part, path)
                .await
                .map_err(file_err(path))?;
            Ok(done)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

/// The store's sidecar of the recording, copied; a store without one (sidecars switched
/// off) gets one written from the ledger.
async fn write_sidecar(
    store: &Store,
    account: &crate::accounts::AccountName,
    object: &Archived,
    path: &Path,
) -> Result<(), RetrieveError> {
    let file_err = |source| RetrieveError::File {
        path: path.to_owned(),
        source,
    };
    let body = match store.read(&store.sidecar_key(&object.key)).await? {
        Some(stream) => {
            stream
                .try_fold(Vec::new(), |mut all, chunk| async move {
                    all.extend_from_slice(&chunk);
                    Ok(all)
                })
                .await?
        }
        None => {
            let row = &object.row;
            let archived = ArchivedObject {
                key: object.key.clone(),
                size: object.size,
                sha256: object.sha256.clone(),
                content_type: row.content_type.clone(),
                etag: row.etag.clone(),
                version: None,
                archived_at: row.archived_at.unwrap_or_default(),
            };
            let sidecar = Sidecar::new(account, &row.record, &archived, "unknown");
            serde_json::to_vec_pretty(&sidecar).unwrap_or_default()
        }
    };
    let part = part_path(path);
    tokio::fs::write(&part, body).await.map_err(file_err)?;
    tokio::fs::rename(&part, path).await.map_err(file_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_named_by_the_last_part_of_its_key_never_a_path() {
        let uuid = CallUuid::parse("u1").unwrap_or_else(|| panic!("uuid"));
        assert_eq!(file_name("a/2026/x.wav", &uuid), "x.wav");
        assert_eq!(file_name("a/..", &uuid), "u1");
        assert_eq!(file_name("a/", &uuid), "u1");
        assert_eq!(
            part_path(Path::new("/tmp/out/x.wav")),
            Path::new("/tmp/out/.x.wav.part")
        );
    }
}
