//! The same-work limit: a minimal client that makes, per recording, exactly the requests
//! the job makes and nothing else: the link request to the simulator's API (a multipart
//! form, as callvault sends it; one login for the run), the download into memory, the
//! recording's PUT with its checksum (callvault's own S3 client, `x-amz-checksum-sha256`)
//! and the sidecar's PUT. No ledger, no pace, no checks: what the machine allows for the
//! job's requests at a given concurrency, the ceiling for small recordings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::rig::{Rig, Server};
use crate::{MIB, PART_MIB};

/// Archives every recording of `names` into `bucket`, `concurrency` at a time. Returns the
/// wall time.
pub async fn run(
    rig: &Rig,
    server: Server,
    bucket: &str,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let (s3, _) = crate::ceiling::clients(rig, server, bucket, PART_MIB * MIB as usize)?;
    let http = reqwest::Client::new();
    let api = rig.sim.api_url();
    let started = Instant::now();
    let token = crate::source::login(&http, &api, rig).await?;
    futures::stream::iter(names)
        .map(|name| {
            let job = Job {
                http: &http,
                api: &api,
                token: &token,
                s3: Arc::clone(&s3),
            };
            async move {
                job.one(name)
                    .await
                    .with_context(|| format!("archiving {name}"))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// What each recording's requests share.
struct Job<'a> {
    http: &'a reqwest::Client,
    api: &'a str,
    token: &'a str,
    s3: Arc<dyn ObjectStore>,
}

impl Job<'_> {
    /// Link, download, recording PUT, sidecar PUT.
    async fn one(&self, name: &str) -> anyhow::Result<()> {
        let url = self.link(name).await?;
        let body = self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let key = format!("samework/{name}");
        self.s3
            .put(&Path::from(key.as_str()), PutPayload::from(body))
            .await?;
        let sidecar = Path::from(format!("{key}.json"));
        let json = Bytes::from_static(crate::ceiling::SIDECAR);
        self.s3.put(&sidecar, PutPayload::from(json)).await?;
        Ok(())
    }

    /// `App.Sip_Cdr.GetRecodeFile` as callvault asks for it (a multipart form).
    async fn link(&self, name: &str) -> anyhow::Result<String> {
        let form = reqwest::multipart::Form::new()
            .text("service", "App.Sip_Cdr.GetRecodeFile")
            .text("token", self.token.to_owned())
            .text("filename", name.to_owned());
        let answer: serde_json::Value = self
            .http
            .post(self.api)
            .multipart(form)
            .send()
            .await?
            .json()
            .await?;
        if answer["ret"] != 200 || answer["data"]["status"] != 0 {
            bail!("the provider answered {answer}");
        }
        answer["data"]["result"]["downurl"]
            .as_str()
            .map(str::to_owned)
            .context("no downurl in the answer")
    }
}
