//! A call known from the provider's bill list and from its callback is archived once, under
//! one key, whatever the order in which the bill, the callback and a pass reach it: one row
//! per call (named by the callback's uuid) and one recording object per call, on both
//! backends. The interleavings: the callback before the pass claims the bill's row, while
//! the pass holds it (slow downloads), after the pass archived it; sync before and after
//! the callback.

use std::collections::BTreeSet;
use std::time::Duration;

use callvault::archive::run_pass;
use callvault::callback::parse_record;
use callvault::domain::{CallRecord, Origin, RecordState};
use callvault::ledger::BackendKind;
use callvault::simulator::DownloadFault;
use callvault::timefmt::default_provider_tz;
use chrono::Utc;
use serde_json::Value;

use crate::sync::sync;
use crate::world::{World, cu};

on_both_backends!(
    callbacks_arriving_mid_pass_leave_one_row_and_one_object_per_call,
    callbacks_before_and_after_the_pass_and_sync_after_the_callbacks,
);

fn records_of(callbacks: &[Value]) -> Vec<CallRecord> {
    callbacks
        .iter()
        .map(|c| parse_record(&c.to_string(), default_provider_tz()).expect("sample parses"))
        .collect()
}

/// The recordings in the store: every object but sidecars and manifests.
async fn recording_keys(world: &World) -> BTreeSet<String> {
    world
        .object_keys()
        .await
        .into_iter()
        .filter(|k| !k.ends_with(".json") && !k.contains("manifests/"))
        .collect()
}

/// One archived row per callback with a recording, named by its uuid, each with its own
/// object; one `no_recording` row per unanswered call; no other row or recording object.
async fn assert_one_row_and_one_object_per_call(world: &World, callbacks: &[Value]) {
    let uuid_of = |c: &Value| c["uuid"].as_str().expect("a uuid").to_owned();
    let has_recording = |c: &Value| !c["recordfilename"].as_str().unwrap_or_default().is_empty();
    let recorded: BTreeSet<String> = callbacks
        .iter()
        .filter(|c| has_recording(c))
        .map(uuid_of)
        .collect();
    let unanswered: BTreeSet<String> = callbacks
        .iter()
        .filter(|c| !has_recording(c))
        .map(uuid_of)
        .collect();
    for state in [
        RecordState::Pending,
        RecordState::InProgress,
        RecordState::Failed,
    ] {
        assert_eq!(world.count(state).await, 0, "no record left {state}");
    }
    let in_state = |state| async move {
        world
            .ledger
            .uuids_in_state(state)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.to_string())
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        in_state(RecordState::Archived).await,
        recorded,
        "one archived row per call, by its uuid"
    );
    assert_eq!(
        in_state(RecordState::NoRecording).await,
        unanswered,
        "one row per unanswered call"
    );
    let mut named = BTreeSet::new();
    for uuid in &recorded {
        let row = world.ledger.get(&cu(uuid)).await.unwrap().unwrap();
        assert_eq!(
            row.record.origin,
            Origin::Callback,
            "{uuid}: the callback's"
        );
        let key = row.object_key.expect("an archived row names its object");
        named.insert(world.bucket_path(&key).to_string());
    }
    assert_eq!(
        recording_keys(world).await,
        named,
        "exactly the objects the ledger names, one per call"
    );
    assert_eq!(world.verify_archived().await, recorded.len());
}

/// 40 calls known only from the bill list; a pass with slow downloads; every callback
/// arrives while the pass runs (some rows claimed, some still waiting).
async fn callbacks_arriving_mid_pass_leave_one_row_and_one_object_per_call(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let callbacks = world.sim.sample_callbacks(40, Utc::now());
    let found = sync(&world).await.progress.found;
    assert_eq!(found, 40);
    for callback in &callbacks {
        let file = callback["recordfilename"].as_str().unwrap_or_default();
        world
            .sim
            .push_download_fault(file, DownloadFault::Stall(Duration::from_millis(300)));
    }
    let (deps, opts) = (world.deps(), world.options());
    let pass = tokio::spawn(async move { run_pass(&deps, &opts).await });
    let claimed = async {
        while world.count(RecordState::InProgress).await == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), claimed)
        .await
        .expect("the pass claims bill rows");

    let outcomes = world
        .ledger
        .import(&records_of(&callbacks), Utc::now())
        .await
        .unwrap();

    assert!(
        outcomes
            .iter()
            .all(|o| *o == callvault::ledger::ImportOutcome::MatchedBill),
        "every callback joins its bill's row: {outcomes:?}"
    );
    let result = pass.await.unwrap().expect("the ledger works");
    assert_eq!(result.exit_code(), 0, "{result:?}");
    // Anything the pass left due (none expected) is archived by the next one.
    assert_eq!(world.run(&world.options()).await.exit_code(), 0);
    assert_one_row_and_one_object_per_call(&world, &callbacks).await;
}

/// Half the calls: the callback comes after sync and before the pass; the other half after
/// the pass archived the bill's row; then a second set whose callbacks come first and sync
/// after them.
async fn callbacks_before_and_after_the_pass_and_sync_after_the_callbacks(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let callbacks = world.sim.sample_callbacks(8, Utc::now());
    let records = records_of(&callbacks);
    assert_eq!(sync(&world).await.progress.found, 8);
    world
        .ledger
        .import(&records[..4], Utc::now())
        .await
        .unwrap();
    assert_eq!(world.run(&world.options()).await.exit_code(), 0);
    world
        .ledger
        .import(&records[4..], Utc::now())
        .await
        .unwrap();

    let later = world.sim.sample_callbacks(4, Utc::now());
    world
        .ledger
        .import(&records_of(&later), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        sync(&world).await.progress.found,
        0,
        "sync finds them known"
    );
    assert_eq!(world.run(&world.options()).await.exit_code(), 0);

    let all: Vec<Value> = callbacks.into_iter().chain(later).collect();
    assert_one_row_and_one_object_per_call(&world, &all).await;
}
