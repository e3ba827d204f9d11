//! The callback/import record parser on arbitrary text: never panics, every piece it finds
//! is a slice of the input in order, lines are counted right, a parsed record keeps its text,
//! and repairing valid JSON never changes what it says.
#![no_main]

use callvault::callback::{parse_document, parse_record, repair, split_objects};
use callvault::timefmt::default_provider_tz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tz = default_provider_tz();
    let lines = text.matches('\n').count() + 1;

    let pieces = split_objects(text);
    let base = text.as_ptr() as usize;
    let mut last_end = 0usize;
    let mut last_line = 1usize;
    for piece in &pieces {
        let start = piece.text.as_ptr() as usize - base;
        assert!(start >= last_end, "pieces overlap or go backwards");
        assert!(
            start + piece.text.len() <= text.len(),
            "a piece is outside the input"
        );
        assert_eq!(&text[start..start + piece.text.len()], piece.text);
        assert!(
            piece.line >= last_line && piece.line <= lines,
            "line {}",
            piece.line
        );
        assert_eq!(
            piece.line,
            text[..start].matches('\n').count() + 1,
            "a piece's line is where it starts"
        );
        if piece.broken.is_none() {
            assert!(piece.text.starts_with('{') && piece.text.ends_with('}'));
        }
        last_end = start + piece.text.len();
        last_line = piece.line;
    }

    let parsed = parse_document(text, tz);
    assert_eq!(parsed.len(), pieces.len());
    for (p, piece) in parsed.iter().zip(&pieces) {
        assert_eq!(p.line, piece.line);
        if let Ok(record) = &p.result {
            assert_eq!(record.raw_json, piece.text);
            assert!(!record.uuid.as_str().is_empty());
            assert!(!record.uuid.as_str().chars().any(char::is_control));
            assert!(!record.company_code.is_empty());
        }
    }

    if let Ok(record) = parse_record(text, tz) {
        assert_eq!(record.raw_json, text);
    }

    let repaired = repair(text);
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let again: serde_json::Value =
            serde_json::from_str(&repaired).expect("repairing valid JSON keeps it valid");
        assert_eq!(again, value, "repairing valid JSON changed it");
    }
});
