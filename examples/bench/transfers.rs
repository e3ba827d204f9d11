//! One measured transfer of a set of recordings by each contender, against one S3 server:
//! callvault (the real binary), the ceiling (object_store from memory), the same-work
//! client and rclone `copyurl`.

use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;

use crate::machine::CpuMeter;
use crate::report::{
    CALLVAULT, CALLVAULT_DEFAULTS, CEILING, CEILING_PARTS, DOWNLOAD, RCLONE, SAME_WORK, Transfer,
};
use crate::rig::{Rig, Server};
use crate::{CALLVAULT_DEFAULT_CONCURRENCY, MEMORY_BUDGET_MIB, MIB, PART_MIB};

/// The peak RSS a callvault run may reach, in KiB: 64 MiB + the upload buffers it can
/// hold, two parts for each transfer it can have at once (`None`: callvault's default
/// concurrency), but never more than its memory budget. The one place the memory target's
/// formula lives.
pub fn rss_limit_kib(concurrency: Option<usize>, records: usize) -> u64 {
    let active = concurrency
        .unwrap_or(CALLVAULT_DEFAULT_CONCURRENCY)
        .min(records) as u64;
    let buffers = (active * 2 * PART_MIB as u64).min(MEMORY_BUDGET_MIB);
    64 * 1024 + buffers * 1024
}

/// The CPU meters of one transfer: the benchmark process (and its waited-for children) and
/// the S3 server's own process, when it has one.
pub struct Meters {
    cpu: CpuMeter,
    server: Option<Duration>,
}

impl Meters {
    pub fn start(rig: &Rig, server: Server) -> Self {
        Self {
            cpu: CpuMeter::start(),
            server: rig.server_cpu(server),
        }
    }

    /// CPU of everything since the start, the busy share, and the server process's CPU.
    pub fn stop(&self, rig: &Rig, server: Server) -> (Duration, f64, Option<Duration>) {
        let (cpu, busy) = self.cpu.stop();
        let server_cpu = self
            .server
            .zip(rig.server_cpu(server))
            .map(|(a, b)| b.saturating_sub(a));
        (cpu + server_cpu.unwrap_or_default(), busy, server_cpu)
    }
}

/// A transfer's figures once it is done; the CPU meters were started just before it.
struct Done<'a> {
    rig: &'a Rig,
    server: Option<Server>,
    set: &'a str,
    tool: &'static str,
    concurrency: usize,
    records: usize,
    bytes: u64,
    wall: Duration,
    meter: Meters,
}

fn finish(done: Done<'_>, child: Option<&crate::child::Child>) -> Transfer {
    let peak_rss_kib = child.map(|c| c.peak_rss_kib);
    let on = done.server.unwrap_or(Server::S3sFs);
    let (cpu, busy, server_cpu) = done.meter.stop(done.rig, on);
    let settings = (done.tool == CALLVAULT).then_some(done.concurrency);
    let t = Transfer {
        server: done.server.map_or("none", Server::name),
        set: done.set.to_owned(),
        tool: done.tool,
        concurrency: done.concurrency,
        records: done.records,
        bytes: done.bytes,
        wall: done.wall,
        walls: vec![done.wall],
        peak_rss_kib,
        rss_limit_kib: peak_rss_kib.map(|_| rss_limit_kib(settings, done.records)),
        cpu,
        server_cpu,
        busy,
        own_cpu: child.map(|c| c.cpu),
        commits: None,
        archived: 0,
    };
    println!(
        "  {:<6} {:<9} {:<52} c={:<3} {:>7.2}s {:>8.1} rec/s {:>7.1} MB/s  CPU {:>5.1} s/GB  busy {:>3.0}%{}",
        t.server,
        t.set,
        t.tool,
        t.concurrency,
        t.wall.as_secs_f64(),
        t.per_second(),
        t.mb_per_second(),
        t.cpu_per_gb(),
        t.busy * 100.0,
        t.peak_rss_kib.map_or(String::new(), |k| format!(
            "  rss {:.1} MiB",
            k as f64 / 1024.0
        ))
    );
    t
}

/// callvault at `concurrency` with the default part size, or at its defaults (`None`:
/// no `--concurrency` or `--part-size-mib`; the row's concurrency is then 0).
pub async fn callvault(
    rig: &Rig,
    server: Server,
    set: &str,
    names: &[String],
    size: u64,
    concurrency: Option<usize>,
) -> anyhow::Result<Transfer> {
    let ledger = rig.ledger_with("run", names, size).await?;
    let bucket = rig.bucket_on(server).await?;
    let meter = Meters::start(rig, server);
    let settings = concurrency.map(|c| (c, PART_MIB));
    let (child, report) = rig
        .callvault_run_on(server, &ledger, &bucket, settings, names.len())
        .await?;
    let done = Done {
        rig,
        server: Some(server),
        set,
        tool: if concurrency.is_some() {
            CALLVAULT
        } else {
            CALLVAULT_DEFAULTS
        },
        concurrency: concurrency.unwrap_or(0),
        records: names.len(),
        bytes: names.len() as u64 * size,
        wall: child.wall,
        meter,
    };
    let mut t = finish(done, Some(&child));
    t.commits = report["ledger_commits"].as_u64();
    t.archived = report["archived"].as_u64().unwrap_or(0);
    if let Some(per) = t.commits_per_record() {
        println!("            ledger commits per archived record: {per:.3}");
    }
    check_stored(rig, server, &bucket, names.len(), size).await?;
    rig.drop_bucket_on(server, &bucket).await?;
    rig.remove_ledger(&ledger);
    Ok(t)
}

pub async fn ceiling(
    rig: &Rig,
    server: Server,
    set: &str,
    contents: &[(String, Bytes)],
    concurrency: usize,
    parts_in_flight: usize,
) -> anyhow::Result<Transfer> {
    let row = Row {
        set,
        tool: if parts_in_flight > 1 {
            CEILING_PARTS
        } else {
            CEILING
        },
        concurrency,
        records: contents.len(),
        size: contents.first().map_or(0, |(_, b)| b.len() as u64),
    };
    let up = crate::ceiling::Upload {
        concurrency,
        part_size: PART_MIB * MIB as usize,
        parts_in_flight,
    };
    into_new_bucket(rig, server, row, async |bucket| {
        crate::ceiling::upload(rig, server, bucket, contents, &up).await
    })
    .await
}

/// The same-work client: per recording, the link request, the download, the recording PUT
/// and the sidecar PUT, nothing else.
pub async fn same_work(
    rig: &Rig,
    server: Server,
    set: &str,
    names: &[String],
    size: u64,
    concurrency: usize,
) -> anyhow::Result<Transfer> {
    let row = Row {
        set,
        tool: SAME_WORK,
        concurrency,
        records: names.len(),
        size,
    };
    into_new_bucket(rig, server, row, async |bucket| {
        crate::samework::run(rig, server, bucket, names, concurrency).await
    })
    .await
}

pub async fn rclone(
    rig: &Rig,
    server: Server,
    set: &str,
    names: &[String],
    size: u64,
    parallel: usize,
) -> anyhow::Result<Transfer> {
    let row = Row {
        set,
        tool: RCLONE,
        concurrency: parallel,
        records: names.len(),
        size,
    };
    into_new_bucket(rig, server, row, async |bucket| {
        crate::rclone::copy_all(rig, server, bucket, names, parallel, PART_MIB).await
    })
    .await
}

/// The row a tool run in this process fills: `records` recordings of `size` bytes each.
struct Row<'a> {
    set: &'a str,
    tool: &'static str,
    concurrency: usize,
    records: usize,
    size: u64,
}

/// Runs `transfer` into a new bucket of `server` under the CPU meters, checks that the
/// bucket then holds every recording, and drops it. `transfer` returns its wall time.
async fn into_new_bucket(
    rig: &Rig,
    server: Server,
    row: Row<'_>,
    transfer: impl AsyncFnOnce(&str) -> anyhow::Result<Duration>,
) -> anyhow::Result<Transfer> {
    let bucket = rig.bucket_on(server).await?;
    let meter = Meters::start(rig, server);
    let wall = transfer(&bucket).await?;
    let done = Done {
        rig,
        server: Some(server),
        set: row.set,
        tool: row.tool,
        concurrency: row.concurrency,
        records: row.records,
        bytes: row.records as u64 * row.size,
        wall,
        meter,
    };
    let t = finish(done, None);
    check_stored(rig, server, &bucket, row.records, row.size).await?;
    rig.drop_bucket_on(server, &bucket).await?;
    Ok(t)
}

pub async fn download_only(
    rig: &Rig,
    set: &str,
    names: &[String],
    size: u64,
    parallel: usize,
) -> anyhow::Result<Transfer> {
    let meter = Meters::start(rig, Server::S3sFs);
    let wall = crate::source::download_all(rig, names, parallel).await?;
    let done = Done {
        rig,
        server: None,
        set,
        tool: DOWNLOAD,
        concurrency: parallel,
        records: names.len(),
        bytes: names.len() as u64 * size,
        wall,
        meter,
    };
    Ok(finish(done, None))
}

/// Fails unless the bucket holds at least `n` objects' worth of bytes.
async fn check_stored(
    rig: &Rig,
    server: Server,
    bucket: &str,
    n: usize,
    size: u64,
) -> anyhow::Result<()> {
    let (bytes, files) = rig.usage_on(server, bucket).await?;
    if files < n || bytes < n as u64 * size {
        bail!("{bucket} holds {files} files, {bytes} bytes; expected {n} objects of {size} bytes");
    }
    Ok(())
}
