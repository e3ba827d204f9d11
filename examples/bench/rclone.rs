//! What an operator would otherwise script: ask the provider for a fresh link per
//! recording (as callvault does) and hand it to `rclone copyurl`, N processes at a time,
//! into the same S3 server (an rclone S3 remote configured through the environment).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use tokio::process::Command;

use crate::rig::{Rig, Server};
use crate::source::{link, login};

/// `rclone version`'s first line, or why there is none.
pub async fn version() -> String {
    match Command::new("rclone").arg("version").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("rclone (no version)")
            .to_owned(),
        Err(e) => format!("rclone not runnable: {e}"),
    }
}

/// Fetches a fresh link for each name and copies it with `rclone copyurl`, `parallel`
/// at a time; `part_mib` is rclone's S3 chunk size. Returns the wall time of the whole.
pub async fn copy_all(
    rig: &Rig,
    server: Server,
    bucket: &str,
    names: &[String],
    parallel: usize,
    part_mib: usize,
) -> anyhow::Result<Duration> {
    let config = rig.dir.path().join("rclone.conf");
    std::fs::write(&config, "")?;
    let http = reqwest::Client::new();
    let api = rig.sim.api_url();
    let s3 = rig.endpoint(server);
    let started = Instant::now();
    let token = login(&http, &api, rig).await?;
    futures::stream::iter(names)
        .map(|name| {
            let (http, api, token, config, s3) = (&http, &api, &token, &config, &s3);
            async move {
                let url = link(http, api, token, name).await?;
                let target = format!("bench:{bucket}/rclone/{name}");
                let out = Command::new("rclone")
                    .args(["copyurl", &url, &target])
                    .arg("--config")
                    .arg(config)
                    .arg(format!("--s3-chunk-size={part_mib}M"))
                    // A clean environment, as for callvault: no proxy or CA-bundle settings.
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env("HOME", rig.dir.path())
                    .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
                    .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
                    .env("RCLONE_CONFIG_BENCH_ENDPOINT", &s3.url)
                    .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", &s3.access_key)
                    .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", &s3.secret_key)
                    .env("RCLONE_CONFIG_BENCH_REGION", &s3.region)
                    .env("RCLONE_CONFIG_BENCH_NO_CHECK_BUCKET", "true")
                    .kill_on_drop(true)
                    .output()
                    .await
                    .context("running rclone")?;
                if !out.status.success() {
                    bail!(
                        "rclone copyurl {name}: {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}
