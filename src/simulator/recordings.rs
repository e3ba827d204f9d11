//! Recording content that is a pure function of (filename, size), so tests can check what
//! was archived without storing it, generated fast enough to stand in for real downloads.

use std::io;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use sha2::{Digest, Sha256};

/// Bytes per body chunk, and the most ever generated at once.
const CHUNK: usize = 64 * 1024;
const WAV_HEADER_LEN: usize = 44;

/// An ID3v2.4 tag header (empty tag) and the first MPEG-1 Layer III frame header.
const MP3_HEADER: [u8; 14] = [
    b'I', b'D', b'3', 4, 0, 0, 0, 0, 0, 0, 0xFF, 0xFB, 0x90, 0x64,
];

/// The content of one recording: a WAV header for `.wav` files, an ID3 tag and frame header
/// for `.mp3` files, then pseudo-random bytes.
#[derive(Debug, Clone)]
pub(super) struct Content {
    seed: u64,
    size: u64,
    header: Option<Vec<u8>>,
}

impl Content {
    pub fn new(filename: &str, size: u64) -> Self {
        let digest = Sha256::digest(filename.as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        let lower = filename.to_ascii_lowercase();
        let header = if lower.ends_with(".wav") {
            Some(wav_header(size).to_vec())
        } else if lower.ends_with(".mp3") {
            Some(MP3_HEADER.to_vec())
        } else {
            None
        };
        Self {
            seed: u64::from_le_bytes(seed),
            size,
            header,
        }
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`; the caller stays within `size`.
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        // splitmix64 is counter-based: word i depends only on (seed, i), so any offset is O(1).
        let mut word = offset / 8;
        let skip = (offset % 8) as usize;
        let mut rest = &mut buf[..];
        if skip != 0 {
            let bytes = splitmix64(self.seed, word).to_le_bytes();
            let n = (8 - skip).min(rest.len());
            rest[..n].copy_from_slice(&bytes[skip..skip + n]);
            rest = &mut rest[n..];
            word += 1;
        }
        let mut chunks = rest.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&splitmix64(self.seed, word).to_le_bytes());
            word += 1;
        }
        let tail = chunks.into_remainder();
        let n = tail.len();
        tail.copy_from_slice(&splitmix64(self.seed, word).to_le_bytes()[..n]);

        if let Some(header) = &self.header
            && offset < header.len() as u64
        {
            let start = offset as usize;
            let n = (header.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&header[start..start + n]);
        }
    }
}

fn splitmix64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A PCM header: 8 kHz, 16-bit, mono, data length `size - 44` (zero for shorter files).
fn wav_header(size: u64) -> [u8; WAV_HEADER_LEN] {
    let data_len =
        u32::try_from(size.saturating_sub(WAV_HEADER_LEN as u64)).unwrap_or(u32::MAX - 36);
    let mut h = [0u8; WAV_HEADER_LEN];
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &(36 + data_len).to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),     // PCM
        &1u16.to_le_bytes(),     // mono
        &8000u32.to_le_bytes(),  // sample rate
        &16000u32.to_le_bytes(), // byte rate
        &2u16.to_le_bytes(),     // block align
        &16u16.to_le_bytes(),    // bits per sample
        b"data",
        &data_len.to_le_bytes(),
    ];
    let mut at = 0;
    for field in fields {
        h[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    h
}

/// Streams bytes `range` of the recording (clamped to `size`) in chunks of 64 KiB.
pub fn recording_bytes(
    filename: &str,
    size: u64,
    range: Range<u64>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    body_stream(Content::new(filename, size), range, Plan::default())
}

/// Hex SHA-256 of the whole recording, computed by generating it.
pub fn expected_sha256(filename: &str, size: u64) -> String {
    let content = Content::new(filename, size);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(CHUNK as u64) as usize;
        content.fill(pos, &mut buf[..n]);
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    hex::encode(hasher.finalize())
}

/// The length of the header a recording of this name starts with (0 when it has none).
pub(super) fn header_len(filename: &str) -> u64 {
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".wav") {
        WAV_HEADER_LEN as u64
    } else if lower.ends_with(".mp3") {
        MP3_HEADER.len() as u64
    } else {
        0
    }
}

/// `Content-Type` the provider's storage would send for this file name.
pub fn content_type(filename: &str) -> &'static str {
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".wav") {
        "audio/wav"
    } else if lower.ends_with(".mp3") {
        "audio/mpeg"
    } else {
        "application/octet-stream"
    }
}

/// How a body deviates from a plain, complete stream.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Plan {
    /// Pause after the headers, before the first byte.
    pub stall: Option<Duration>,
    /// End the body after this many bytes, whatever `Content-Length` said.
    pub stop_after: Option<u64>,
    /// With `stop_after`: fail the stream (connection reset) instead of ending it.
    pub reset: bool,
    /// With `stop_after`: go silent this long at the cut (a stall mid-body), then end.
    pub silence: Option<Duration>,
}

/// How long a cut-short body waits before closing, so hyper flushes what was sent first.
const LINGER: Duration = Duration::from_millis(50);

struct Cursor {
    content: Content,
    pos: u64,
    end: u64,
    plan: Plan,
}

pub(super) fn body_stream(
    content: Content,
    range: Range<u64>,
    plan: Plan,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let pos = range.start.min(content.size);
    let mut end = range.end.clamp(pos, content.size);
    if let Some(limit) = plan.stop_after {
        end = end.min(pos.saturating_add(limit));
    }
    futures::stream::unfold(
        Cursor {
            content,
            pos,
            end,
            plan,
        },
        |mut cur| async move {
            if let Some(pause) = cur.plan.stall.take() {
                tokio::time::sleep(pause).await;
            }
            if cur.pos < cur.end {
                let n = (cur.end - cur.pos).min(CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(n);
                cur.content.fill(cur.pos, &mut buf);
                cur.pos += n as u64;
                return Some((Ok(buf.freeze()), cur));
            }
            cur.plan.stop_after.take()?;
            tokio::time::sleep(cur.plan.silence.take().unwrap_or(LINGER)).await;
            if !cur.plan.reset {
                return None;
            }
            let err = io::Error::new(io::ErrorKind::ConnectionReset, "simulated connection reset");
            Some((Err(err), cur))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_at_any_offset_matches_the_whole() {
        let content = Content::new("x.wav", 1000);
        let mut whole = vec![0u8; 1000];
        content.fill(0, &mut whole);

        for (start, len) in [(0, 3), (3, 50), (43, 9), (44, 1), (517, 483)] {
            let mut part = vec![0u8; len];
            content.fill(start as u64, &mut part);
            assert_eq!(part, whole[start..start + len], "offset {start}");
        }
        assert_eq!(&whole[..4], b"RIFF");
        assert_eq!(&whole[36..40], b"data");
        assert_eq!(
            u32::from_le_bytes([whole[40], whole[41], whole[42], whole[43]]),
            956
        );
    }
}
