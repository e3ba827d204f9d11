//! The streaming media check on arbitrary bytes, fed in arbitrary pieces: never panics, and
//! its verdict does not depend on how the stream was cut.
#![no_main]

use callvault::archive::MediaProbe;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = ["a.wav", "a.mp3", "a.ogg", "a.m4a", "a.amr", "a.bin"];

fn judge(name: &str, bytes: &[u8], cuts: &[u8]) -> Result<Option<u128>, String> {
    let mut probe = MediaProbe::new(name);
    let mut rest = bytes;
    for cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = usize::from(*cut).max(1).min(rest.len());
        probe.feed(&rest[..n])?;
        rest = &rest[n..];
    }
    probe
        .finish()
        .map(|info| info.duration.map(|d| d.as_nanos()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(selector) % NAMES.len()];
    let (cuts, bytes) = rest.split_at(rest.len().min(8));
    let whole = judge(name, bytes, &[255]);
    let pieces = judge(name, bytes, if cuts.is_empty() { &[1] } else { cuts });
    assert_eq!(
        whole.is_ok(),
        pieces.is_ok(),
        "{name}: {whole:?} vs {pieces:?}"
    );
    if let (Ok(a), Ok(b)) = (whole, pieces) {
        assert_eq!(a, b);
    }
});
