//! The object-key template on arbitrary templates and records: a template that parses
//! renders every record, and the key is always safe (no empty, `.` or `..` segment, no leading `/`, no control character or backslash),
//! has exactly the segments its template has (values never add one), and stays under the
//! store's prefix.
#![no_main]

use callvault::domain::{CallRecord, CallUuid};
use callvault::store::{DEFAULT_TEMPLATE, KeyTemplate, Store, StoreConfig};
use callvault::timefmt::default_provider_tz;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "calls/archive";

/// Splits the input into fields at 0xFF bytes (never in UTF-8, so values may be anything).
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0xFF)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let f = fields(data);
    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
    let template = match get(0).as_str() {
        "" => DEFAULT_TEMPLATE.to_owned(),
        "1" => "{companycode}/{yyyy}{mm}{dd}/{hh}/{filename}-{uuid}{ext}".to_owned(),
        "2" => "x/{filename}/{uuid}/a{ext}".to_owned(),
        other => other.to_owned(),
    };
    let Ok(keys) = KeyTemplate::parse(&template, default_provider_tz()) else {
        return;
    };
    let Some(uuid) = CallUuid::parse(&get(1)) else {
        return;
    };
    let seconds = get(4)
        .bytes()
        .fold(0i64, |n, b| n.wrapping_mul(31).wrapping_add(i64::from(b)));
    let record = CallRecord {
        call_start: (!get(4).is_empty())
            .then(|| DateTime::<Utc>::from_timestamp(seconds.rem_euclid(8_000_000_000), 0))
            .flatten(),
        ..CallRecord::new(uuid, &get(2), &get(3), "")
    };
    let key = keys
        .render(&record)
        .expect("a template that parses renders a key for every record");

    assert!(!key.starts_with('/'), "{key:?}");
    assert!(key.len() <= 900);
    let segments: Vec<&str> = key.split('/').collect();
    for s in &segments {
        assert!(!s.is_empty() && *s != "." && *s != "..", "{key:?}");
        assert!(!s.chars().any(|c| c.is_control() || c == '\\'), "{key:?}");
    }
    // Values cannot add segments: the key has as many as the template's literal text.
    let literal_slashes = template
        .split('{')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part
            } else {
                part.split_once('}').map_or("", |p| p.1)
            }
        })
        .map(|p| p.matches('/').count())
        .sum::<usize>();
    assert_eq!(
        segments.len(),
        literal_slashes + 1,
        "{template:?} -> {key:?}"
    );

    let store = Store::open(&StoreConfig {
        part_size: 5 << 20,
        ..StoreConfig::new(format!("memory:///{PREFIX}"))
    })
    .unwrap();
    let path = store
        .path(&key)
        .expect("a rendered key is a valid store path");
    let full = path.as_ref();
    assert!(full.starts_with(&format!("{PREFIX}/")), "{full:?}");
    assert_eq!(path.parts().count(), 2 + segments.len(), "{full:?}");
});
