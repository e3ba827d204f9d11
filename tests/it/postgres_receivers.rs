//! Two `callvault serve` receivers (the real binary) on one PostgreSQL ledger, as two
//! replicas behind a Service: the provider's retries and duplicates may reach both at once.

use std::process::Command;
use std::time::Duration;

use callvault::ledger::Table;
use futures::future::join_all;

use crate::cli::callvault;
use crate::inspect::table_rows;
use crate::postgres_workers::{finish, spawn};
use crate::serve::{free_port, wait_ready};
use crate::world::World;

const SECRET: &str = "callback-secret-canary-4567";

/// The same callbacks posted to both receivers at the same moment: every post is answered
/// 200, each call is stored once (one `new`, one `already_known`), and both stop cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_given_the_same_callbacks_at_once_store_each_call_once() {
    let world = World::postgres().await;
    let receivers: Vec<(std::process::Child, u16)> = (0..2)
        .map(|_| {
            let port = free_port();
            let mut serve = callvault(&world, &["serve", "--listen", &format!("127.0.0.1:{port}")]);
            serve.env("CALLVAULT_CALLBACK_SECRET", SECRET);
            (spawn(serve), port)
        })
        .collect();
    let mut bases = Vec::new();
    for (_, port) in &receivers {
        bases.push(wait_ready(*port).await);
    }
    let callbacks = world.sim.sample_callbacks(40, chrono::Utc::now());
    let client = reqwest::Client::new();

    let post_to_both = |callback: &serde_json::Value| {
        let posts: Vec<_> = bases
            .iter()
            .map(|base| {
                client
                    .post(format!("{base}/callback/{SECRET}"))
                    .header("content-type", "application/json")
                    .body(callback.to_string())
                    .timeout(Duration::from_secs(60))
                    .send()
            })
            .collect();
        let uuid = callback["uuid"].as_str().unwrap().to_owned();
        async move {
            let mut outcomes = Vec::new();
            for response in join_all(posts).await {
                let response = response.expect("the receiver answers");
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                assert_eq!(status, 200, "{uuid}: {body}");
                outcomes.push(body["outcomes"][0].as_str().unwrap_or_default().to_owned());
            }
            outcomes.sort();
            (uuid, outcomes)
        }
    };

    let answers = join_all(callbacks.iter().map(post_to_both)).await;

    for (uuid, outcomes) in &answers {
        assert_eq!(outcomes, &["already_known", "new"], "{uuid}");
    }
    let rows = table_rows(&world.ledger, Table::Calls).await;
    assert_eq!(rows.len(), 40, "one row per call");
    let status = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!(
        (
            status.total,
            status.counts["pending"],
            status.counts["no_recording"]
        ),
        (40, 32, 8)
    );
    crate::ledger::assert_counts_match(&world.ledger, "two receivers").await;
    for (child, _) in &receivers {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    }
    for (child, _) in receivers {
        let out = finish(child).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "a clean stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
