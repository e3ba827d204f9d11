//! A bundle as a directory to read: itself, or a `.zip` / `.tar` unpacked into a temporary
//! directory first (streamed entry by entry, never whole in memory), so that every check
//! reads plain files the same way.

use std::fs::File;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::BundleError;

/// The bundle's root directory; a temporary one lives as long as this value.
pub(super) enum Opened {
    Dir(PathBuf),
    Unpacked(TempDir),
}

impl Opened {
    pub(super) fn root(&self) -> &Path {
        match self {
            Self::Dir(path) => path,
            Self::Unpacked(dir) => dir.path(),
        }
    }
}

pub(super) fn open(bundle: &Path) -> Result<Opened, BundleError> {
    let meta = std::fs::metadata(bundle).map_err(|source| BundleError::Missing {
        path: bundle.to_owned(),
        source,
    })?;
    if meta.is_dir() {
        return Ok(Opened::Dir(bundle.to_owned()));
    }
    let unreadable = |why: String| BundleError::Unreadable {
        path: bundle.to_owned(),
        why,
    };
    let ext = bundle.extension().and_then(|e| e.to_str()).unwrap_or("");
    let dir =
        tempfile::tempdir().map_err(|e| unreadable(format!("no temporary directory: {e}")))?;
    let file = File::open(bundle).map_err(|e| unreadable(e.to_string()))?;
    match ext {
        "zip" => unzip(file, dir.path()).map_err(unreadable)?,
        "tar" => tar::Archive::new(file)
            .unpack(dir.path())
            .map_err(|e| unreadable(format!("not a readable tar: {e}")))?,
        _ => {
            return Err(BundleError::NotABundle {
                path: bundle.to_owned(),
            });
        }
    }
    Ok(Opened::Unpacked(dir))
}

fn unzip(file: File, to: &Path) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("not a readable zip: {e}"))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = entry.enclosed_name() else {
            return Err(format!("entry {:?} leaves the bundle's root", entry.name()));
        };
        let path = to.join(name);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out = File::create(&path).map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
