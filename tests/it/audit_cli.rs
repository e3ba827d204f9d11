//! `verify`, `failures` and `retry` from the binary, driven by environment variables:
//! exit 0 when the archive is intact, 1 on a mismatch, 2 on a configuration error.

use callvault::domain::RecordState;

use crate::cli::{assert_exit, callvault, output, write_callbacks};
use crate::world::World;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn verify_exit_codes_then_failures_and_retry_from_the_command_line() {
    let world = World::new().await;
    let file = write_callbacks(&world, 5);
    let missing = r#"{"uuid": "cli-missing", "companycode": 20000013, "recordfilename": "cli-missing.wav", "starttime": "2026-11-01 10:00:00"}"#;
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap() + missing + "\n",
    )
    .unwrap();
    assert_exit(
        &output(callvault(&world, &["import", file.to_str().unwrap()])).await,
        0,
    );
    let run = output(callvault(
        &world,
        &[
            "run",
            "--json",
            "--give-up-answers",
            "1",
            "--give-up-window",
            "0s",
        ],
    ))
    .await;
    assert_exit(&run, 1);
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let archived = summary["archived"].as_u64().unwrap();
    assert!(archived >= 3, "{summary}");
    let manifest = summary["manifests"][0]["key"].as_str().unwrap().to_owned();

    let clean = output(callvault(&world, &["verify"])).await;
    assert_exit(&clean, 0);
    assert!(stdout(&clean).contains(&format!("verified {archived} object(s)")));
    assert!(stdout(&clean).contains("0 missing, 0 changed, 0 unreadable"));
    assert_exit(
        &output(callvault(&world, &["verify", "--manifests"])).await,
        0,
    );
    let sampled = output(callvault(&world, &["verify", "--sample", "2", "--json"])).await;
    assert_exit(&sampled, 0);
    let sampled: serde_json::Value = serde_json::from_slice(&sampled.stdout).unwrap();
    assert_eq!(sampled["objects"]["checked"], 2);
    assert!(
        sampled["verification"]
            .as_str()
            .unwrap()
            .starts_with("verify-")
    );

    for bad in [
        &["verify", "--sample", "0"][..],
        &["verify", "--since", "someday"],
    ] {
        assert_exit(&output(callvault(&world, bad)).await, 2);
    }
    let mut no_store = callvault(&world, &["verify"]);
    no_store.env_remove("CALLVAULT_STORE");
    assert_exit(&output(no_store).await, 2);
    let mut wrong_key = callvault(&world, &["verify"]);
    wrong_key.env("AWS_SECRET_ACCESS_KEY", "not-the-key");
    assert_exit(&output(wrong_key).await, 2);

    let victim = world
        .ledger
        .uuids_in_state(RecordState::Archived)
        .await
        .unwrap()[0]
        .clone();
    let key = world
        .ledger
        .get(&victim)
        .await
        .unwrap()
        .unwrap()
        .object_key
        .unwrap();
    crate::audit::delete(&world.store, &key).await;
    let broken = output(callvault(&world, &["verify"])).await;
    assert_exit(&broken, 1);
    assert!(
        stdout(&broken).contains(&format!("missing     {victim}  {key}")),
        "{}",
        stdout(&broken)
    );
    crate::audit::delete(&world.store, &manifest).await;
    let chain = output(callvault(&world, &["verify", "--manifests", "--json"])).await;
    assert_exit(&chain, 1);
    let chain: serde_json::Value = serde_json::from_slice(&chain.stdout).unwrap();
    let problems: Vec<&str> = chain["manifests"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["problem"].as_str().unwrap())
        .collect();
    assert_eq!(problems, ["ledger_manifest_missing", "newest_differs"]);

    let failures = output(callvault(&world, &["failures", "--json"])).await;
    assert_exit(&failures, 0);
    let listed: Vec<serde_json::Value> = failures
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            &listed[0]["uuid"],
            &listed[0]["last_error_code"],
            &listed[0]["attempts"]
        ),
        (
            &"cli-missing".into(),
            &"provider_code_1002".into(),
            &1.into()
        )
    );
    assert!(
        stdout(&output(callvault(&world, &["failures"])).await)
            .contains("1 failed or expired record(s)")
    );

    assert_exit(&output(callvault(&world, &["retry"])).await, 2);
    let archived_one = output(callvault(&world, &["retry", "--uuid", &victim])).await;
    assert_exit(&archived_one, 1);
    assert!(String::from_utf8_lossy(&archived_one.stderr).contains("is archived; left alone"));
    let by_code = output(callvault(
        &world,
        &["retry", "--error-code", "provider_code_1002"],
    ))
    .await;
    assert_exit(&by_code, 0);
    assert!(stdout(&by_code).contains("1 record(s) of account default back to pending"));
    assert_eq!(world.count(RecordState::Pending).await, 1);
    assert_eq!(world.count(RecordState::Archived).await as u64, archived);

    // Sidecars switched off from the environment.
    world.import_call("plain", "plain.wav", 2000).await;
    let mut plain = callvault(&world, &["run"]);
    plain.env("CALLVAULT_SIDECAR", "false");
    assert_exit(&output(plain).await, 1);
    let key = world
        .ledger
        .get(&crate::world::cu("plain"))
        .await
        .unwrap()
        .unwrap()
        .object_key
        .unwrap();
    assert!(crate::audit::bytes_of(&world.store, &key).await.is_some());
    assert!(
        crate::audit::bytes_of(&world.store, &format!("{key}.json"))
            .await
            .is_none()
    );
    let sidecar = format!(
        "{}.json",
        world
            .ledger
            .get(&victim)
            .await
            .unwrap()
            .unwrap()
            .object_key
            .unwrap()
    );
    assert!(
        crate::audit::bytes_of(&world.store, &sidecar)
            .await
            .is_some(),
        "on by default"
    );
}
