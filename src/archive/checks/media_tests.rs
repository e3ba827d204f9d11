//! The media check: what passes as audio, what does not, and the WAV duration, whatever
//! the chunking of the stream.

use std::time::Duration;

use proptest::prelude::*;

use super::media::{MediaInfo, Probe};

/// A WAV: RIFF header, then `chunks` (id, body) in order.
fn wav(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WAVE".to_vec();
    for (id, data) in chunks {
        body.extend_from_slice(*id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A PCM `fmt ` body: mono, 16-bit, `rate` samples per second.
fn fmt(rate: u32) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&rate.to_le_bytes());
    f.extend_from_slice(&(rate * 2).to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&16u16.to_le_bytes());
    f
}

fn probe(name: &str, bytes: &[u8], chunk: usize) -> Result<MediaInfo, String> {
    let mut p = Probe::new(name);
    for part in bytes.chunks(chunk.max(1)) {
        p.feed(part)?;
    }
    p.finish()
}

fn secs(info: MediaInfo) -> f64 {
    info.duration.expect("a duration").as_secs_f64()
}

#[test]
fn a_wav_gives_its_duration_from_the_data_chunk_and_byte_rate() {
    let file = wav(&[(b"fmt ", fmt(8000)), (b"data", vec![7; 48_000])]);
    for chunk in [1, 3, 7, 44, 45, 1000, file.len()] {
        assert_eq!(secs(probe("a.wav", &file, chunk).unwrap()), 3.0, "{chunk}");
    }
}

#[test]
fn chunks_before_the_data_are_walked_with_their_padding() {
    let odd_list = (b"LIST", vec![1; 33]);
    let extensible_fmt = (b"fmt ", [fmt(16_000), vec![0; 24]].concat());
    let file = wav(&[
        odd_list,
        extensible_fmt,
        (b"fact", vec![0; 4]),
        (b"junk", vec![]),
        (b"data", vec![1; 64_000]),
    ]);
    for chunk in [1, 5, 13, 4096] {
        assert_eq!(
            secs(probe("rec.WAV", &file, chunk).unwrap()),
            2.0,
            "{chunk}"
        );
    }
}

#[test]
fn a_data_length_never_filled_in_is_read_from_the_bytes_present() {
    let mut file = wav(&[(b"fmt ", fmt(8000)), (b"data", vec![3; 16_000])]);
    let at = file.len() - 16_000 - 4;
    file[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(secs(probe("a.wav", &file, 100).unwrap()), 1.0);
    // A header that claims more than the file holds counts what is there.
    file[at..at + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert_eq!(secs(probe("a.wav", &file, 100).unwrap()), 1.0);
}

#[test]
fn empty_header_only_and_foreign_bytes_are_not_audio() {
    let header_only = wav(&[(b"fmt ", fmt(8000)), (b"data", vec![])]);
    assert_eq!(header_only.len(), 44);
    for (name, bytes, why) in [
        ("a.wav", vec![], "empty"),
        ("a.mp3", vec![], "empty"),
        ("a.bin", vec![], "empty"),
        ("a.wav", header_only, "header with no audio"),
        ("a.wav", b"<html><body>busy</body></html>".to_vec(), "RIFF"),
        ("a.wav", b"RIFF".to_vec(), "no data chunk"),
        ("a.wav", wav(&[(b"data", vec![1; 100])]), "format chunk"),
        ("a.wav", wav(&[(b"fmt ", vec![0; 8])]), "too short"),
        (
            "a.wav",
            wav(&[(b"fmt ", fmt(0)), (b"data", vec![1; 9])]),
            "format chunk",
        ),
        ("a.mp3", b"ID3\x04\0\0\0\0\0\0".to_vec(), "no audio frame"),
        (
            "a.mp3",
            b"ID3\x04\0\0\0\0\0\0\xff\xfb\x90\x64".to_vec(),
            "header with no",
        ),
        ("a.mp3", vec![0x41; 10_000], "no MPEG audio frame"),
        ("a.ogg", b"<html>".to_vec(), "does not start"),
        ("a.ogg", b"Og".to_vec(), "too short"),
    ] {
        let err = probe(name, &bytes, 3).unwrap_err();
        assert!(err.contains(why), "{name} {bytes:?}: {err}");
    }
}

#[test]
fn mp3s_pass_with_or_without_a_tag_and_unknown_formats_need_only_bytes() {
    let frame = [0xFF, 0xFB, 0x90, 0x64, 1, 2, 3, 4];
    let mut tagged = b"ID3\x03\0\0\0\0\x01\x00".to_vec(); // 128-byte tag (syncsafe)
    tagged.extend_from_slice(&[0u8; 128]);
    tagged.extend_from_slice(&frame);
    // A tag with a footer (flag 0x10) adds 10 bytes.
    let mut footer = b"ID3\x04\0\x10\0\0\0\x02".to_vec();
    footer.extend_from_slice(&[0u8; 12]);
    footer.extend_from_slice(&frame);
    let padded = [vec![0u8; 100], frame.to_vec()].concat();
    for (name, bytes) in [
        ("a.mp3", tagged),
        ("a.mp3", footer),
        ("a.mp3", frame.to_vec()),
        ("a.mp3", padded),
        ("a.ogg", b"OggS\0\x02".to_vec()),
        ("a.m4a", b"\0\0\0\x20ftypM4A ".to_vec()),
        ("a.gsm", vec![9]),
        ("noext", vec![9, 9]),
    ] {
        for chunk in [1, 2, 5, 4096] {
            let info = probe(name, &bytes, chunk).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(info.duration, None);
        }
    }
}

#[test]
fn a_wrong_start_is_refused_before_the_rest_arrives() {
    let mut p = Probe::new("a.wav");
    assert!(p.feed(b"<!DOCTYPE html><html>").is_err());
    let mut p = Probe::new("a.mp3");
    assert!(p.feed(&vec![0x20; 5000]).is_err());
}

#[test]
fn durations_far_from_the_billed_seconds_are_noted() {
    let info = |s: f64| MediaInfo {
        duration: Some(Duration::from_secs_f64(s)),
    };
    assert_eq!(info(30.0).disagreement(Some(30)), None);
    assert_eq!(info(14.9).disagreement(Some(10)), None); // within 5 s
    assert!(info(15.5).disagreement(Some(10)).is_some());
    assert_eq!(info(35.9).disagreement(Some(30)), None); // within 20 %
    assert!(info(36.5).disagreement(Some(30)).is_some());
    assert_eq!(info(115.0).disagreement(Some(100)), None); // within 20 %
    assert!(info(125.0).disagreement(Some(100)).is_some());
    assert!(info(0.5).disagreement(Some(60)).is_some());
    assert_eq!(info(600.0).disagreement(None), None);
    assert_eq!(MediaInfo { duration: None }.disagreement(Some(5)), None);
    let note = info(2.5).disagreement(Some(25)).unwrap();
    assert!(note.contains("2.5 s") && note.contains("25 s"), "{note}");
}

proptest! {
    #[test]
    fn any_chunking_of_a_wav_gives_the_same_duration(
        cuts in proptest::collection::vec(1usize..200, 1..40),
        data in 1usize..3000,
        list in 0usize..50,
    ) {
        let file = wav(&[(b"LIST", vec![5; list]), (b"fmt ", fmt(1000)), (b"data", vec![1; data])]);
        let mut p = Probe::new("x.wav");
        let mut rest = &file[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let n = (*cut).min(rest.len());
            p.feed(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        let got = p.finish().unwrap().duration.unwrap().as_secs_f64();
        prop_assert!((got - data as f64 / 2000.0).abs() < 1e-9);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_probe(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        name in prop_oneof!["a.wav", "a.mp3", "a.ogg", "a.m4a", "a.xyz"],
    ) {
        let _ = probe(&name, &bytes, 7);
    }
}
