//! Where a bundle's files go: a directory, or one `.zip` or `.tar` file. The writer puts
//! files through [`BundleSink`] and never knows which; recordings are streamed through, one
//! chunk at a time, never held whole in memory. The archive formats' writers are blocking,
//! so a recording reaches them through [`SyncIoBridge`] inside `spawn_blocking`.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::io::AsyncWriteExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::write::ExportError;

/// A file's bytes as a stream (a recording from the store).
pub type Body = BoxStream<'static, Result<Bytes, std::io::Error>>;

#[async_trait]
pub trait BundleSink: Send {
    /// Puts a small file (`path` relative to the bundle's root, with `/`).
    async fn put_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), ExportError>;

    /// Puts a file streamed from `body`, which says it holds `size` bytes.
    async fn put_stream(&mut self, path: &str, size: u64, body: Body) -> Result<(), ExportError>;

    /// Completes the bundle.
    async fn finish(self: Box<Self>) -> Result<(), ExportError>;

    /// Removes what was written: the export failed.
    async fn abandon(self: Box<Self>);
}

/// The sink `out` names: `.zip` and `.tar` are one file, anything else a directory. A
/// directory must be new or empty; a file must be new.
pub fn open_sink(out: &Path) -> Result<Box<dyn BundleSink>, ExportError> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("zip") => Ok(Box::new(ZipSink {
            path: out.to_owned(),
            writer: Some(zip::ZipWriter::new(new_file(out)?)),
        })),
        Some("tar") => Ok(Box::new(TarSink {
            path: out.to_owned(),
            builder: Some(tar::Builder::new(new_file(out)?)),
        })),
        _ => DirSink::open(out).map(|s| Box::new(s) as Box<dyn BundleSink>),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Output {
        path: path.to_owned(),
        source,
    }
}

fn new_file(path: &Path) -> Result<std::fs::File, ExportError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => ExportError::OutExists(path.to_owned()),
            _ => ExportError::Output {
                path: path.to_owned(),
                source,
            },
        })
}

/// `path` as relative parts, refusing anything that could leave the bundle's root.
pub fn safe_parts(path: &str) -> Result<Vec<&str>, ExportError> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
        || path.contains('\\')
    {
        return Err(ExportError::BadPath(path.to_owned()));
    }
    Ok(parts)
}

/// A directory, new or empty.
struct DirSink {
    root: PathBuf,
    created: bool,
}

impl DirSink {
    fn open(root: &Path) -> Result<Self, ExportError> {
        let created = match std::fs::read_dir(root).map(|mut e| e.next().is_none()) {
            Ok(true) => false,
            Ok(false) => return Err(ExportError::OutExists(root.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(root).map_err(io_err(root))?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(ExportError::OutExists(root.to_owned()));
            }
            Err(source) => return Err(io_err(root)(source)),
        };
        Ok(Self {
            root: root.to_owned(),
            created,
        })
    }

    async fn file(&self, path: &str) -> Result<(PathBuf, tokio::fs::File), ExportError> {
        let full = safe_parts(path)?
            .iter()
            .fold(self.root.clone(), |p, part| p.join(part));
        if let Some(parent) = full.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_err(parent))?;
        }
        let file = tokio::fs::File::create(&full)
            .await
            .map_err(io_err(&full))?;
        Ok((full, file))
    }
}

#[async_trait]
impl BundleSink for DirSink {
    async fn put_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), ExportError> {
        let (full, mut file) = self.file(path).await?;
        file.write_all(&bytes).await.map_err(io_err(&full))?;
        file.sync_all().await.map_err(io_err(&full))
    }

    async fn put_stream(&mut self, path: &str, _size: u64, body: Body) -> Result<(), ExportError> {
        let (full, mut file) = self.file(path).await?;
        let mut reader = StreamReader::new(body);
        tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(io_err(&full))?;
        file.sync_all().await.map_err(io_err(&full))
    }

    async fn finish(self: Box<Self>) -> Result<(), ExportError> {
        Ok(())
    }

    async fn abandon(self: Box<Self>) {
        if self.created {
            let _ = tokio::fs::remove_dir_all(&self.root).await;
            return;
        }
        // It was empty: everything in it is ours.
        if let Ok(mut entries) = tokio::fs::read_dir(&self.root).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }
}

fn failed_earlier(path: &Path) -> ExportError {
    ExportError::Archive {
        path: path.to_owned(),
        why: "an earlier write failed".into(),
    }
}

/// Runs blocking `work` off the runtime's threads.
async fn run_blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, ExportError> + Send + 'static,
) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ExportError::Archive {
            path: path.to_owned(),
            why: format!("the writer stopped: {e}"),
        })?
}

/// Runs `work` on the blocking writer taken out of `slot`, then puts it back (unless the
/// work failed: the archive is then abandoned).
async fn blocking<W: Send + 'static>(
    slot: &mut Option<W>,
    path: &Path,
    work: impl FnOnce(&mut W) -> Result<(), ExportError> + Send + 'static,
) -> Result<(), ExportError> {
    let mut writer = slot.take().ok_or_else(|| failed_earlier(path))?;
    let writer = run_blocking(path, move || work(&mut writer).map(|()| writer)).await?;
    *slot = Some(writer);
    Ok(())
}

/// A reader over `body` for a blocking writer (created here, in the runtime).
fn bridge(body: Body) -> SyncIoBridge<StreamReader<Body, Bytes>> {
    SyncIoBridge::new(StreamReader::new(body))
}

struct ZipSink {
    path: PathBuf,
    writer: Option<zip::ZipWriter<std::fs::File>>,
}

fn zip_err(path: &Path) -> impl Fn(zip::result::ZipError) -> ExportError + Send + 'static {
    let path = path.to_owned();
    move |e| ExportError::Archive {
        path: path.clone(),
        why: e.to_string(),
    }
}

#[async_trait]
impl BundleSink for ZipSink {
    async fn put_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), ExportError> {
        safe_parts(path)?;
        let (name, out, zerr) = (path.to_owned(), self.path.clone(), zip_err(&self.path));
        blocking(&mut self.writer, &self.path, move |w| {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(0o644);
            w.start_file(name, options).map_err(&zerr)?;
            w.write_all(&bytes).map_err(io_err(&out))
        })
        .await
    }

    async fn put_stream(&mut self, path: &str, size: u64, body: Body) -> Result<(), ExportError> {
        safe_parts(path)?;
        let (name, out, zerr) = (path.to_owned(), self.path.clone(), zip_err(&self.path));
        let mut reader = bridge(body);
        blocking(&mut self.writer, &self.path, move |w| {
            // Recordings are compressed already: stored as they are.
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(size >= u64::from(u32::MAX))
                .unix_permissions(0o644);
            w.start_file(name, options).map_err(&zerr)?;
            std::io::copy(&mut reader, w).map_err(io_err(&out))?;
            Ok(())
        })
        .await
    }

    async fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        let (zerr, out) = (zip_err(&self.path), self.path.clone());
        let writer = self
            .writer
            .take()
            .ok_or_else(|| failed_earlier(&self.path))?;
        run_blocking(&self.path, move || {
            writer
                .finish()
                .map_err(&zerr)?
                .sync_all()
                .map_err(io_err(&out))
        })
        .await
    }

    async fn abandon(self: Box<Self>) {
        drop(self.writer);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

struct TarSink {
    path: PathBuf,
    builder: Option<tar::Builder<std::fs::File>>,
}

fn tar_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    header
}

#[async_trait]
impl BundleSink for TarSink {
    async fn put_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), ExportError> {
        safe_parts(path)?;
        let (name, out) = (path.to_owned(), self.path.clone());
        blocking(&mut self.builder, &self.path, move |b| {
            let mut header = tar_header(bytes.len() as u64);
            b.append_data(&mut header, name, bytes.as_slice())
                .map_err(io_err(&out))
        })
        .await
    }

    async fn put_stream(&mut self, path: &str, size: u64, body: Body) -> Result<(), ExportError> {
        safe_parts(path)?;
        let (name, out) = (path.to_owned(), self.path.clone());
        let reader = bridge(body);
        blocking(&mut self.builder, &self.path, move |b| {
            let mut header = tar_header(size);
            // Exactly `size` bytes: a shorter or longer stream is an error, never a
            // misaligned archive.
            let mut exact = ExactReader {
                inner: reader,
                left: size,
            };
            b.append_data(&mut header, name, &mut exact)
                .map_err(io_err(&out))?;
            exact.check_end().map_err(io_err(&out))
        })
        .await
    }

    async fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        let out = self.path.clone();
        let builder = self
            .builder
            .take()
            .ok_or_else(|| failed_earlier(&self.path))?;
        run_blocking(&self.path, move || {
            let file = builder.into_inner().map_err(io_err(&out))?;
            file.sync_all().map_err(io_err(&out))
        })
        .await
    }

    async fn abandon(self: Box<Self>) {
        drop(self.builder);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

/// Reads exactly `left` bytes from `inner`: fewer is an error.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the stream ended {} bytes short", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl<R: std::io::Read> ExactReader<R> {
    /// Fails when the stream holds more than it said.
    fn check_end(mut self) -> std::io::Result<()> {
        let mut one = [0u8; 1];
        match self.inner.read(&mut one)? {
            0 => Ok(()),
            _ => Err(std::io::Error::other("the stream is longer than its size")),
        }
    }
}
