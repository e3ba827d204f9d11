//! Sample call-record callbacks in the provider's format, with the recordings they point at,
//! so demos, tests and benchmarks start from realistic input.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::envelope::{PROVIDER_TZ, provider_time};

/// One generated call: its callback, and the recording to register (none if unanswered).
#[derive(Debug, Clone)]
pub(super) struct SampleCall {
    pub callback: Value,
    pub recording: Option<(String, u64)>,
}

const MIN_SIZE: u64 = 20 * 1024;
const MAX_SIZE: u64 = 2 * 1024 * 1024;
const WAV_BYTES_PER_SEC: u64 = 16_000;
const MP3_BYTES_PER_SEC: u64 = 4_000;
const THIRTY_DAYS_SECS: i64 = 30 * 86_400;

/// `n` calls that ended in the 30 days before `now`; every 5th is unanswered, about one
/// recording in six is an `.mp3`, the rest `.wav`. Ids count up from `first_id`.
pub(super) fn sample_calls(
    company_code: &str,
    n: usize,
    now: DateTime<Utc>,
    first_id: u64,
) -> Vec<SampleCall> {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| sample_call(&mut rng, company_code, first_id + i as u64, i % 5 != 4, now))
        .collect()
}

fn sample_call(
    rng: &mut impl Rng,
    company_code: &str,
    id: u64,
    answered: bool,
    now: DateTime<Utc>,
) -> SampleCall {
    let uuid = uuid::Uuid::new_v4().to_string();
    let ring = rng.random_range(3..=25_i64);
    let (billsec, media) = if answered {
        let size = rng.random_range(MIN_SIZE..=MAX_SIZE);
        let (ext, rate) = match rng.random_ratio(1, 6) {
            true => ("mp3", MP3_BYTES_PER_SEC),
            false => ("wav", WAV_BYTES_PER_SEC),
        };
        let billsec = seconds(size, rate);
        (billsec, Some((ext, size)))
    } else {
        (0, None)
    };
    let duration = ring + billsec;
    let start = now - Duration::seconds(rng.random_range(duration + 60..THIRTY_DAYS_SECS));
    let answer_time = match answered {
        true => provider_time(start + Duration::seconds(ring)),
        false => String::new(),
    };
    let recording = media.map(|(ext, size)| {
        let day = start.with_timezone(&PROVIDER_TZ).format("%Y%m%d");
        (format!("{company_code}-{day}-{uuid}.{ext}"), size)
    });
    let company = company_code
        .parse::<u64>()
        .map_or_else(|_| json!(company_code), |c| json!(c));
    let callback = json!({
        "callmethod": 3,
        "starttime": provider_time(start),
        "answertime": answer_time,
        "endtime": provider_time(start + Duration::seconds(duration)),
        "duration": duration,
        "billsec": billsec,
        "crmid": rng.random_range(2001..=2020).to_string(),
        "hangupdirection": if rng.random_bool(0.5) { 10040 } else { 10041 },
        "chengshudu": "0",
        "hangupcause": if answered { 10001 } else { 10005 },
        "memberid": rng.random_range(10_u64.pow(16)..10_u64.pow(17)).to_string(),
        "disnumber": format!("025{}", rng.random_range(60_000_000..70_000_000)),
        "destnumber": format!("01{}", rng.random_range(3_000_000_000_u64..9_000_000_000)),
        "downloadip": "127.0.0.1",
        "recordfilename": recording.as_ref().map_or("", |(name, _)| name.as_str()),
        "companycode": company,
        "type": "callout",
        "id": id,
        "extnumber": rng.random_range(7001..=7020).to_string(),
        "uuid": uuid,
        "userkey": 1,
        "customuuid": format!("cust-{}", rng.random_range(1..=100_000)),
    });
    SampleCall {
        callback,
        recording,
    }
}

/// The seconds a recording of `size` bytes lasts (at least 1): what the provider bills.
pub(super) fn billsec_for(filename: &str, size: u64) -> i64 {
    let rate = match filename.to_ascii_lowercase().ends_with(".mp3") {
        true => MP3_BYTES_PER_SEC,
        false => WAV_BYTES_PER_SEC,
    };
    seconds(size, rate)
}

fn seconds(size: u64, rate: u64) -> i64 {
    i64::try_from(size / rate).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fifth_call_is_unanswered_and_others_have_recordings() {
        let now = Utc::now();

        let calls = sample_calls("20000013", 10, now, 1);

        for (i, call) in calls.iter().enumerate() {
            let cb = &call.callback;
            assert_eq!(cb["companycode"], json!(20000013));
            if i % 5 == 4 {
                assert_eq!(cb["recordfilename"], "");
                assert_eq!(cb["billsec"], 0);
                assert!(call.recording.is_none());
            } else {
                let (name, size) = call
                    .recording
                    .clone()
                    .expect("answered call has a recording");
                assert_eq!(cb["recordfilename"], name.as_str());
                assert!(name.starts_with("20000013-") && !name.contains('/'));
                assert!((MIN_SIZE..=MAX_SIZE).contains(&size));
            }
        }
    }
}
