//! Backfills and operations through the binary: CSV exports, a date/company slice, the TOML
//! configuration file and its precedence, run metrics (textfile and Pushgateway) and
//! progress lines.

use std::sync::{Arc, Mutex};

use callvault::domain::RecordState;
use serde_json::Value;

use crate::cli::{assert_exit, callvault, output};
use crate::world::World;

/// Sample callbacks that have a recording.
fn answered(world: &World, n: usize) -> Vec<Value> {
    world
        .sim
        .sample_callbacks(n * 2, chrono::Utc::now())
        .into_iter()
        .filter(|c| !c["recordfilename"].as_str().unwrap_or_default().is_empty())
        .take(n)
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes callbacks as a CSV export (header row of field names), plus `extra` raw lines.
fn write_csv(world: &World, calls: &[Value], extra: &[&str]) -> std::path::PathBuf {
    let header: Vec<String> = calls[0].as_object().unwrap().keys().cloned().collect();
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).unwrap();
    for call in calls {
        writer
            .write_record(header.iter().map(|h| cell(&call[h])))
            .unwrap();
    }
    let mut text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    let path = world.dir.path().join("export.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_csv_export_imports_and_a_slice_archives_only_its_calls() {
    let world = World::new().await;
    let mut calls = answered(&world, 6);
    // (start, company): two calls of company 111 on 1 November, the rest elsewhere or later.
    let placed = [
        ("2026-11-01 00:00:00", "111"),
        ("2026-11-01 23:59:59", "111"),
        ("2026-11-01 12:00:00", "222"),
        ("2026-11-02 00:00:00", "111"),
        ("2026-10-31 23:59:59", "111"),
        ("2026-11-03 08:00:00", "111"),
    ];
    for (call, (start, company)) in calls.iter_mut().zip(placed) {
        call["starttime"] = start.into();
        call["companycode"] = company.into();
    }
    let uuid = |i: usize| calls[i]["uuid"].as_str().unwrap().to_owned();
    let header_len = calls[0].as_object().unwrap().len();
    let file = write_csv(&world, &calls, &["short,row", &",".repeat(header_len - 1)]);

    let import = output(callvault(&world, &["import", file.to_str().unwrap()])).await;
    assert_exit(&import, 1);
    let stdout = String::from_utf8_lossy(&import.stdout);
    let stderr = String::from_utf8_lossy(&import.stderr);
    assert!(stdout.contains("6 new"), "{stdout}");
    assert!(stdout.contains("2 rejected"), "{stdout}");
    assert!(
        stderr.contains("export.csv:8: rejected: 2 fields"),
        "{stderr}"
    );
    assert!(stderr.contains("export.csv:9: rejected:"), "{stderr}");
    let row = world
        .ledger
        .get(&crate::world::cu(&uuid(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RecordState::Pending);
    let raw: Value = serde_json::from_str(&row.record.raw_json).unwrap();
    assert_eq!(
        raw["companycode"], "111",
        "the row is kept as a callback object"
    );

    // The same export on standard input is recognised as CSV and changes nothing.
    let mut again = callvault(&world, &["import", "-"]);
    again.stdin(std::fs::File::open(&file).unwrap());
    let again = output(again).await;
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("0 new (0 without recording), 6 already known"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    let slice = [
        "run",
        "--json",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-01",
        "--company",
        "111",
    ];
    let run = output(callvault(&world, &slice)).await;
    assert_exit(&run, 0);
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["archived"], 2, "{summary}");
    let mut archived = world
        .ledger
        .uuids_in_state(RecordState::Archived)
        .await
        .unwrap();
    archived.sort();
    let mut want = vec![uuid(0), uuid(1)];
    want.sort();
    assert_eq!(archived, want);
    assert_eq!(world.count(RecordState::Pending).await, 4);

    let backwards = output(callvault(
        &world,
        &["run", "--since", "2026-11-02", "--until", "2026-11-01"],
    ))
    .await;
    assert_exit(&backwards, 2);
    let nonsense = output(callvault(&world, &["run", "--since", "last tuesday"])).await;
    assert_exit(&nonsense, 2);
}

#[tokio::test]
async fn a_config_file_fills_in_below_the_environment_and_the_flags() {
    let world = World::new().await;
    let calls = answered(&world, 6);
    let lines: Vec<String> = calls.iter().map(Value::to_string).collect();
    let file = world.dir.path().join("calls.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    assert_exit(
        &output(callvault(&world, &["import", file.to_str().unwrap()])).await,
        0,
    );
    let secret = world
        .s3
        .env()
        .into_iter()
        .find(|(k, _)| *k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1;
    let config = world.dir.path().join("callvault.toml");
    std::fs::write(
        &config,
        format!(
            "key-template = \"fromfile/{{uuid}}{{ext}}\"\nmax_records = 5\nconcurrency = 2\n\n[aws]\nsecret_access_key = \"{secret}\"\n"
        ),
    )
    .unwrap();
    let with_file = |args: &[&str]| {
        let mut cmd = callvault(&world, args);
        cmd.env("CALLVAULT_CONFIG", &config)
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("CALLVAULT_MAX_RECORDS", "3");
        cmd
    };

    // The file gives the template and the S3 secret; the environment's 3 beats the file's 5.
    let run = output(with_file(&["run", "--json"])).await;
    // Records left due by --max-records: not "nothing left to do", so exit 1.
    assert_exit(&run, 1);
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["archived"], 3, "{summary}");
    assert!(summary["left_due"].as_u64().unwrap() > 0, "{summary}");
    let keys = world.object_keys().await;
    assert!(
        keys.iter()
            .filter(|k| k.starts_with("calls/fromfile/"))
            .count()
            >= 3,
        "{keys:?}"
    );

    // A flag beats the environment.
    let run = output(with_file(&["run", "--json", "--max-records", "1"])).await;
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["archived"], 1, "{summary}");

    // A typo in the file is a configuration error that names the key.
    std::fs::write(&config, "concurency = 3\n").unwrap();
    let bad = output(with_file(&["run"])).await;
    assert_exit(&bad, 2);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown setting `concurency`"));
}

/// A stand-in Pushgateway: remembers what is PUT to it.
async fn pushgateway() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let pushed = Arc::new(Mutex::new(Vec::new()));
    let seen = pushed.clone();
    let app = axum::Router::new().route(
        "/metrics/job/{job}",
        axum::routing::put(
            move |axum::extract::Path(job): axum::extract::Path<String>, body: String| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((job, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), pushed)
}

#[tokio::test]
async fn a_run_pushes_and_writes_its_metrics_and_logs_progress_lines() {
    let world = World::new().await;
    let calls = answered(&world, 4);
    let file = write_csv(&world, &calls, &[]);
    assert_exit(
        &output(callvault(&world, &["import", file.to_str().unwrap()])).await,
        0,
    );
    let (gateway, pushed) = pushgateway().await;
    let textfile = world.dir.path().join("textfile").join("callvault.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();

    let run = output(callvault(
        &world,
        &[
            "run",
            "--pushgateway",
            &gateway,
            "--metrics-file",
            textfile.to_str().unwrap(),
            "--progress",
            "lines",
        ],
    ))
    .await;
    assert_exit(&run, 0);

    let text = std::fs::read_to_string(&textfile).unwrap();
    for line in [
        "callvault_last_run_records{account=\"default\",outcome=\"archived\"} 4",
        "callvault_last_run_records{account=\"default\",outcome=\"failed\"} 0",
        "callvault_records{account=\"default\",state=\"archived\"} 4",
        "callvault_last_run_exit_code{account=\"default\"} 0",
        "callvault_oldest_pending_age_seconds{account=\"default\"} 0",
        "callvault_last_success_timestamp_seconds{account=\"default\"} ",
        "callvault_last_run_duration_seconds{account=\"default\"} ",
        "callvault_last_run_bytes{account=\"default\"} ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "{line} not in\n{text}"
        );
    }
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].0, "callvault");
    assert_eq!(pushed[0].1, text, "the same figures go to both");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("progress=\"run\"") && l.contains("records=4")),
        "{stderr}"
    );
}
