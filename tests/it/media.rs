//! Media sanity: bytes that are not audio (empty, a header alone) are kept only when the
//! provider serves the same bytes twice, and then flagged, never as good; and a WAV whose length disagrees with the call's billed seconds is archived but
//! flagged, in the ledger, the run summary and `status`.

use callvault::callback::parse_record;
use callvault::domain::RecordState;
use callvault::simulator::DownloadFault;
use callvault::timefmt::default_provider_tz;

use object_store::ObjectStoreExt;

use crate::world::World;

/// Bytes per second of the simulator's WAVs (8 kHz, 16-bit, mono) and their header.
const WAV_RATE: u64 = 16_000;
const WAV_HEADER: u64 = 44;

impl World {
    /// Imports a call billed `billsec` seconds whose WAV lasts `seconds`.
    async fn import_wav(&self, uuid: &str, billsec: i64, seconds: u64) {
        let file = format!("{uuid}.wav");
        self.sim
            .add_recording(&file, WAV_HEADER + seconds * WAV_RATE);
        let json = serde_json::json!({
            "uuid": uuid, "companycode": 20000013, "recordfilename": file,
            "starttime": "2026-11-01 10:00:00", "billsec": billsec,
        });
        let record = parse_record(&json.to_string(), default_provider_tz()).unwrap();
        self.ledger
            .import(&[record], chrono::Utc::now())
            .await
            .unwrap();
    }
}

/// An empty recording and a header alone, served identically on two attempts, are what the
/// provider has: archived as served and flagged (the ledger's `media_note`, the sidecar, the
/// run summary, `status` and `/metrics` say so), never refused. A header served once, then
/// the real file, is archived as the real file, unflagged; the odd body is not kept.
#[tokio::test]
async fn odd_recordings_served_identically_twice_are_archived_and_flagged() {
    let world = World::new().await;
    world.import_wav("empty", 30, 30).await;
    world.import_wav("header", 30, 30).await;
    world.import_wav("once", 30, 30).await;
    for _ in 0..2 {
        world
            .sim
            .push_download_fault("empty.wav", DownloadFault::ZeroLength);
        world
            .sim
            .push_download_fault("header.wav", DownloadFault::HeaderOnly);
    }
    world
        .sim
        .push_download_fault("once.wav", DownloadFault::HeaderOnly);

    let result = world.run(&world.options()).await;

    let r = &result.report;
    assert_eq!(
        (r.archived, r.failed, r.media_flagged, result.exit_code()),
        (3, 0, 2, 0),
        "{r:?}"
    );
    for (uuid, why, size) in [
        ("empty", "empty", 0),
        ("header", "header with no audio", 44),
    ] {
        let row = world
            .ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.state, row.attempts, row.size_bytes),
            (RecordState::Archived, 2, Some(size)),
            "{uuid}"
        );
        let note = world
            .ledger
            .media_of(&crate::world::cu(uuid))
            .await
            .unwrap()
            .and_then(|m| m.note)
            .unwrap_or_default();
        assert!(
            note.contains("as the provider serves it") && note.contains(why),
            "{uuid}: {note}"
        );
        let key = row.object_key.expect("archived");
        assert_eq!(
            world.object_sha256(&key).await,
            row.sha256,
            "{uuid}: stored as served"
        );
        let sidecar = world
            .store
            .object_store()
            .get(&world.bucket_path(&format!("{key}.json")))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let sidecar: serde_json::Value = serde_json::from_slice(&sidecar).unwrap();
        assert_eq!(
            sidecar["media_note"].as_str(),
            Some(note.as_str()),
            "{uuid}"
        );
    }
    let once = world
        .ledger
        .get(&crate::world::cu("once"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((once.state, once.attempts), (RecordState::Archived, 2));
    assert_eq!(once.sha256, world.sim.expected_sha256("once.wav"));
    let status = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!(status.media_flagged, 2);
    let metrics = callvault::metrics::render(&[callvault::metrics::AccountFigures {
        account: callvault::accounts::AccountName::default_account(),
        status,
        syncs: None,
        proof: None,
    }]);
    assert!(
        metrics.contains("callvault_media_flagged_records{account=\"default\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_wav_far_from_its_billed_seconds_is_archived_and_flagged() {
    let world = World::new().await;
    world.import_wav("agrees", 30, 31).await;
    world.import_wav("longer", 25, 60).await;
    world.import_wav("shorter", 300, 200).await;
    world.import_wav("close", 100, 118).await;

    let result = world.run(&world.options()).await;

    assert_eq!(result.report.archived, 4);
    assert_eq!(result.report.media_flagged, 2);
    assert!(
        result
            .report
            .human()
            .contains("2 archived recording(s) flagged")
    );
    assert_eq!(result.exit_code(), 0, "a flag is not a failure");
    for (uuid, ms, flagged) in [
        ("agrees", 31_000, false),
        ("longer", 60_000, true),
        ("shorter", 200_000, true),
        ("close", 118_000, false),
    ] {
        let media = world
            .ledger
            .media_of(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(media.duration_ms, Some(ms), "{uuid}");
        assert_eq!(media.note.is_some(), flagged, "{uuid}: {media:?}");
    }
    let note = world
        .ledger
        .media_of(&crate::world::cu("longer"))
        .await
        .unwrap()
        .unwrap()
        .note;
    assert!(
        note.unwrap()
            .contains("60.0 s but the call was billed 25 s")
    );
    let status = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!(status.media_flagged, 2);
    assert_eq!(world.verify_archived().await, 4);
}

#[tokio::test]
async fn the_simulators_sample_recordings_agree_with_their_callbacks() {
    let world = World::new().await;
    let records = world.import_samples(30).await;

    let result = world.run(&world.options()).await;

    assert_eq!(result.report.archived, 24);
    assert_eq!(result.report.media_flagged, 0);
    let mut wavs = 0;
    for record in records.iter().filter(|r| r.record_file.ends_with(".wav")) {
        let media = world.ledger.media_of(&record.uuid).await.unwrap().unwrap();
        let ms = media.duration_ms.expect("a WAV has a duration");
        let billed = record.billsec.unwrap() * 1000;
        assert!((ms - billed).abs() < 1000, "{ms} ms vs {billed} ms billed");
        wavs += 1;
    }
    assert!(wavs > 0);
}

/// A recording first served as an HTML error page (200, `text/html`), then as the real
/// file: archived as the real file; the page never reached the store (one recording PUT,
/// the good one).
#[tokio::test]
async fn a_recording_first_served_as_an_html_page_is_archived_and_the_page_never_stored() {
    use crate::s3proxy::{S3Op, S3Proxy};
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    world.import_wav("page", 30, 30).await;
    world
        .sim
        .push_download_fault("page.wav", DownloadFault::HtmlPage);
    let deps = world.deps_with(world.ledger.clone(), world.store_through(&proxy.endpoint));

    let result = callvault::archive::run_pass(&deps, &world.options())
        .await
        .unwrap();

    assert_eq!(
        (result.report.archived, result.report.media_flagged),
        (1, 0),
        "{:?}",
        result.report
    );
    assert_eq!(
        proxy.seen(S3Op::PutObject),
        1,
        "only the real recording was put"
    );
    assert_eq!(
        world
            .attempts_of("page")
            .await
            .first()
            .and_then(|a| a.1.clone()),
        Some("download_not_a_recording".into())
    );
    world.assert_archived_exactly_once(1).await;
}
