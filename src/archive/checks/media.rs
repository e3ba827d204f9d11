//! Is a download plausibly the recording its file name says it is? Judged from the bytes as
//! they stream past (at most a few header bytes kept, never the file): WAV by walking its
//! RIFF chunks, which also gives its duration; MP3 by skipping an ID3 tag and finding a frame
//! sync; a few other formats by their magic bytes. A file with no audio in it (empty, a
//! header alone, something else) is refused, so it is never archived as good.

use std::time::Duration;

/// How far past an ID3 tag (or the start) an MP3 frame sync may be.
const MP3_SYNC_WINDOW: u64 = 4096;

/// What the bytes said about the recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaInfo {
    /// From a WAV header: the data chunk's length over the byte rate.
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Wav,
    Mp3,
    /// Magic bytes at an offset.
    Magic(usize, &'static [u8]),
    Unknown,
}

impl Format {
    fn of(file_name: &str) -> Self {
        let ext = file_name
            .rsplit_once('.')
            .map(|(_, e)| e.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "wav" | "wave" => Self::Wav,
            "mp3" => Self::Mp3,
            "ogg" | "oga" | "opus" => Self::Magic(0, b"OggS"),
            "flac" => Self::Magic(0, b"fLaC"),
            "amr" => Self::Magic(0, b"#!AMR"),
            "m4a" | "mp4" => Self::Magic(4, b"ftyp"),
            _ => Self::Unknown,
        }
    }
}

/// Where the parser is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Gathering `need` bytes of a header into the buffer.
    Collect(usize),
    /// Passing over this many bytes (a chunk or tag body).
    Skip(u64),
    /// MP3: looking for a frame sync up to this absolute position.
    Sync(u64),
    /// Seen enough; the rest is audio.
    Done,
}

/// Which WAV header the buffer is gathering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WavPart {
    Riff,
    ChunkHeader,
    /// The first 16 bytes of a `fmt ` chunk, then `rest` bytes to skip.
    Fmt {
        rest: u64,
    },
}

/// Watches one download's bytes. `feed` refuses as soon as the start is wrong; `finish`
/// judges the whole.
#[derive(Debug)]
pub struct Probe {
    format: Format,
    stage: Stage,
    wav: WavPart,
    /// At most 16 header bytes.
    buf: Vec<u8>,
    /// Bytes seen so far.
    pos: u64,
    byte_rate: Option<u32>,
    /// WAV: the data chunk's declared length and where it starts; MP3: where the first
    /// frame starts.
    data: Option<(u32, u64)>,
    /// MP3: the byte before the current one, for a sync split across chunks.
    prev: Option<u8>,
}

impl Probe {
    pub fn new(file_name: &str) -> Self {
        let format = Format::of(file_name);
        let stage = match format {
            Format::Wav => Stage::Collect(12),
            Format::Mp3 => Stage::Collect(10),
            Format::Magic(at, magic) => Stage::Collect(at + magic.len()),
            Format::Unknown => Stage::Done,
        };
        Self {
            format,
            stage,
            wav: WavPart::Riff,
            buf: Vec::with_capacity(16),
            pos: 0,
            byte_rate: None,
            data: None,
            prev: None,
        }
    }

    /// Looks at the next bytes; an error means they cannot be (the start of) this format.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            match self.stage {
                Stage::Done => {
                    self.pos += bytes.len() as u64;
                    return Ok(());
                }
                Stage::Skip(n) => {
                    let k = n.min(bytes.len() as u64);
                    (bytes, self.pos) = (&bytes[k as usize..], self.pos + k);
                    self.stage = match (n - k, self.format) {
                        (0, Format::Wav) => Stage::Collect(8),
                        (0, _) => Stage::Sync(self.pos + MP3_SYNC_WINDOW),
                        (rest, _) => Stage::Skip(rest),
                    };
                }
                Stage::Collect(need) => {
                    let k = (need - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..k]);
                    (bytes, self.pos) = (&bytes[k..], self.pos + k as u64);
                    if self.buf.len() == need {
                        let head = std::mem::take(&mut self.buf);
                        self.stage = self.collected(&head)?;
                    }
                }
                Stage::Sync(until) => {
                    let found = self.scan(bytes, self.pos, until)?;
                    self.pos += bytes.len() as u64;
                    if found {
                        self.stage = Stage::Done;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// MP3: looks for a frame sync in `bytes` (which start at `start`) before `until`.
    fn scan(&mut self, bytes: &[u8], start: u64, until: u64) -> Result<bool, String> {
        for (i, &b) in bytes.iter().enumerate() {
            let at = start + i as u64;
            if self.prev == Some(0xFF) && is_frame_sync(b) {
                self.data = Some((0, at - 1));
                return Ok(true);
            }
            if at >= until {
                return Err("no MPEG audio frame where one should start".into());
            }
            self.prev = Some(b);
        }
        Ok(false)
    }

    /// A header is complete: check it and say what comes next.
    fn collected(&mut self, head: &[u8]) -> Result<Stage, String> {
        match self.format {
            Format::Wav => self.wav_header(head),
            Format::Mp3 if head.starts_with(b"ID3") => {
                let size = head[6..10]
                    .iter()
                    .fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7f));
                let footer = if head[5] & 0x10 != 0 { 10 } else { 0 };
                Ok(match size + footer {
                    0 => Stage::Sync(self.pos + MP3_SYNC_WINDOW),
                    n => Stage::Skip(n),
                })
            }
            Format::Mp3 => {
                // No tag: the frame starts here (or after a little padding).
                let start = self.pos - head.len() as u64;
                let until = start + MP3_SYNC_WINDOW;
                Ok(match self.scan(head, start, until)? {
                    true => Stage::Done,
                    false => Stage::Sync(until),
                })
            }
            Format::Magic(at, magic) if head[at..] == *magic => Ok(Stage::Done),
            Format::Magic(..) => Err("the file does not start like its format".into()),
            Format::Unknown => Ok(Stage::Done),
        }
    }

    fn wav_header(&mut self, head: &[u8]) -> Result<Stage, String> {
        let u32_at =
            |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        match self.wav {
            WavPart::Riff => {
                if !(matches!(&head[..4], b"RIFF" | b"RF64") && &head[8..12] == b"WAVE") {
                    return Err("not a RIFF/WAVE file".into());
                }
                self.wav = WavPart::ChunkHeader;
                Ok(Stage::Collect(8))
            }
            WavPart::Fmt { rest } => {
                self.byte_rate = Some(u32_at(8));
                self.wav = WavPart::ChunkHeader;
                Ok(match rest {
                    0 => Stage::Collect(8),
                    n => Stage::Skip(n),
                })
            }
            WavPart::ChunkHeader => {
                let size = u32_at(4);
                // Chunks are padded to an even length.
                let body = u64::from(size) + u64::from(size & 1);
                match &head[..4] {
                    b"data" => {
                        self.data = Some((size, self.pos));
                        Ok(Stage::Done)
                    }
                    b"fmt " if size < 16 => Err("the WAV format chunk is too short".into()),
                    b"fmt " => {
                        self.wav = WavPart::Fmt { rest: body - 16 };
                        Ok(Stage::Collect(16))
                    }
                    _ if body == 0 => Ok(Stage::Collect(8)),
                    _ => Ok(Stage::Skip(body)),
                }
            }
        }
    }

    /// Says whether the whole file holds audio, and what it learnt.
    pub fn finish(mut self) -> Result<MediaInfo, String> {
        if self.pos == 0 {
            return Err("the file is empty".into());
        }
        if self.format == Format::Mp3
            && matches!(self.stage, Stage::Collect(_))
            && !self.buf.starts_with(b"ID3")
        {
            // A file shorter than a tag header: its frame may still be in the buffer.
            let head = std::mem::take(&mut self.buf);
            let start = self.pos - head.len() as u64;
            let _ = self.scan(&head, start, start + MP3_SYNC_WINDOW)?;
        }
        match self.format {
            Format::Wav => {
                let Some((declared, start)) = self.data else {
                    return Err("the WAV has no data chunk".into());
                };
                let byte_rate = self
                    .byte_rate
                    .filter(|r| *r > 0)
                    .ok_or("the WAV has no usable format chunk before its data")?;
                let present = self.pos - start;
                if present == 0 {
                    return Err("the WAV is a header with no audio data".into());
                }
                // 0 and 0xFFFFFFFF: written by streaming recorders (or RF64) that never
                // came back to fill the length in.
                let bytes = match declared {
                    0 | u32::MAX => present,
                    n => u64::from(n).min(present),
                };
                Ok(MediaInfo {
                    duration: Some(Duration::from_secs_f64(bytes as f64 / f64::from(byte_rate))),
                })
            }
            Format::Mp3 => match self.data {
                Some((_, frame)) if self.pos > frame + 4 => Ok(MediaInfo { duration: None }),
                Some(_) => Err("the MP3 is a header with no audio frame".into()),
                None => Err("the MP3 has no audio frame".into()),
            },
            Format::Magic(..) if self.stage != Stage::Done => {
                Err("the file is too short for its format".into())
            }
            Format::Magic(..) | Format::Unknown => Ok(MediaInfo { duration: None }),
        }
    }
}

/// The second byte of an MPEG audio frame header: sync bits set, a valid version and layer.
fn is_frame_sync(b: u8) -> bool {
    b & 0xE0 == 0xE0 && (b >> 3) & 0b11 != 0b01 && (b >> 1) & 0b11 != 0b00
}

impl MediaInfo {
    /// A note when the recording's duration disagrees with the call's billed seconds by more
    /// than 5 s and more than 20 % (the recording is archived all the same, and flagged).
    pub fn disagreement(&self, billsec: Option<i64>) -> Option<String> {
        let (duration, billsec) = (self.duration?, billsec?);
        let seconds = duration.as_secs_f64();
        let billed = billsec as f64;
        let tolerance = (0.2 * billed).max(5.0);
        ((seconds - billed).abs() > tolerance).then(|| {
            format!("the recording lasts {seconds:.1} s but the call was billed {billsec} s")
        })
    }
}
