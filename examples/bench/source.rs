//! The source on its own: fresh links from the simulator's API (as a script would ask for
//! them), and every recording downloaded and thrown away, to show what the download half
//! of an archive costs on this machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::rig::Rig;

/// Downloads every recording through a fresh link, `parallel` at a time, keeping nothing.
pub async fn download_all(
    rig: &Rig,
    names: &[String],
    parallel: usize,
) -> anyhow::Result<Duration> {
    let http = reqwest::Client::new();
    let api = rig.sim.api_url();
    let started = Instant::now();
    let token = login(&http, &api, rig).await?;
    futures::stream::iter(names)
        .map(|name| {
            let (http, api, token) = (&http, &api, &token);
            async move {
                let url = link(http, api, token, name).await?;
                let mut body = http
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes_stream();
                while let Some(chunk) = body.next().await {
                    drop(chunk.with_context(|| format!("downloading {name}"))?);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

async fn call(http: &reqwest::Client, api: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
    let answer: Value = http.post(api).form(form).send().await?.json().await?;
    if answer["ret"] != 200 || answer["data"]["status"] != 0 {
        bail!("the provider answered {answer}");
    }
    Ok(answer["data"]["result"].clone())
}

pub async fn login(http: &reqwest::Client, api: &str, rig: &Rig) -> anyhow::Result<String> {
    let c = rig.sim.config();
    let result = call(
        http,
        api,
        &[
            ("service", "App.Sip_Auth.Login"),
            ("appid", &c.appid),
            ("accesskey", &c.accesskey),
        ],
    )
    .await?;
    Ok(result["token"].as_str().unwrap_or_default().to_owned())
}

pub async fn link(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    filename: &str,
) -> anyhow::Result<String> {
    let result = call(
        http,
        api,
        &[
            ("service", "App.Sip_Cdr.GetRecodeFile"),
            ("token", token),
            ("filename", filename),
        ],
    )
    .await?;
    result["downurl"]
        .as_str()
        .map(str::to_owned)
        .context("no downurl in the answer")
}
