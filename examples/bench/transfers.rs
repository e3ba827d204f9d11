//! One measured transfer of a set of recordings by each contender: callvault (the real
//! binary), the ceiling (object_store from memory) and rclone `copyurl`.

use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;

use crate::machine::CpuMeter;
use crate::report::{CALLVAULT, CEILING, CEILING_PARTS, DOWNLOAD, RCLONE, Transfer};
use crate::rig::Rig;
use crate::{MIB, PART_MIB};

/// A transfer's figures once it is done; the CPU meter was started just before it.
struct Done<'a> {
    set: &'a str,
    tool: &'static str,
    concurrency: usize,
    records: usize,
    bytes: u64,
    wall: Duration,
    meter: CpuMeter,
}

fn finish(done: Done<'_>, child: Option<&crate::child::Child>) -> Transfer {
    let peak_rss_kib = child.map(|c| c.peak_rss_kib);
    let (cpu, busy) = done.meter.stop();
    let active = done.concurrency.min(done.records) as u64;
    let t = Transfer {
        set: done.set.to_owned(),
        tool: done.tool,
        concurrency: done.concurrency,
        records: done.records,
        bytes: done.bytes,
        wall: done.wall,
        walls: vec![done.wall],
        peak_rss_kib,
        rss_limit_kib: peak_rss_kib.map(|_| 64 * 1024 + active * PART_MIB as u64 * 1024),
        cpu,
        busy,
        own_cpu: child.map(|c| c.cpu),
        commits: None,
        archived: 0,
    };
    println!(
        "  {:<9} {:<52} c={:<3} {:>7.2}s {:>8.1} rec/s {:>7.1} MB/s  CPU {:>5.1} s/GB  busy {:>3.0}%{}",
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

pub async fn callvault(
    rig: &Rig,
    set: &str,
    names: &[String],
    size: u64,
    concurrency: usize,
) -> anyhow::Result<Transfer> {
    let ledger = rig.ledger_with("run", names, size).await?;
    let bucket = rig.bucket()?;
    let meter = CpuMeter::start();
    let (child, report) = rig
        .callvault_run(&ledger, &bucket, concurrency, PART_MIB, names.len())
        .await?;
    let done = Done {
        set,
        tool: CALLVAULT,
        concurrency,
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
    check_stored(rig, &bucket, names.len(), size)?;
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&ledger);
    Ok(t)
}

pub async fn ceiling(
    rig: &Rig,
    set: &str,
    contents: &[(String, Bytes)],
    concurrency: usize,
    parts_in_flight: usize,
) -> anyhow::Result<Transfer> {
    let bucket = rig.bucket()?;
    let part = PART_MIB * MIB as usize;
    let meter = CpuMeter::start();
    let wall =
        crate::ceiling::upload(rig, &bucket, contents, concurrency, part, parts_in_flight).await?;
    let done = Done {
        set,
        tool: if parts_in_flight > 1 {
            CEILING_PARTS
        } else {
            CEILING
        },
        concurrency,
        records: contents.len(),
        bytes: contents.iter().map(|(_, b)| b.len() as u64).sum(),
        wall,
        meter,
    };
    let t = finish(done, None);
    let size = contents.first().map_or(0, |(_, b)| b.len() as u64);
    check_stored(rig, &bucket, contents.len(), size)?;
    rig.drop_bucket(&bucket)?;
    Ok(t)
}

pub async fn rclone(
    rig: &Rig,
    set: &str,
    names: &[String],
    size: u64,
    parallel: usize,
) -> anyhow::Result<Transfer> {
    let bucket = rig.bucket()?;
    let meter = CpuMeter::start();
    let wall = crate::rclone::copy_all(rig, &bucket, names, parallel, PART_MIB).await?;
    let done = Done {
        set,
        tool: RCLONE,
        concurrency: parallel,
        records: names.len(),
        bytes: names.len() as u64 * size,
        wall,
        meter,
    };
    let t = finish(done, None);
    check_stored(rig, &bucket, names.len(), size)?;
    rig.drop_bucket(&bucket)?;
    Ok(t)
}

pub async fn download_only(
    rig: &Rig,
    set: &str,
    names: &[String],
    size: u64,
    parallel: usize,
) -> anyhow::Result<Transfer> {
    let meter = CpuMeter::start();
    let wall = crate::source::download_all(rig, names, parallel).await?;
    let done = Done {
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
fn check_stored(rig: &Rig, bucket: &str, n: usize, size: u64) -> anyhow::Result<()> {
    let (bytes, files) = rig.bucket_usage(bucket);
    if files < n || bytes < n as u64 * size {
        bail!("{bucket} holds {files} files, {bytes} bytes; expected {n} objects of {size} bytes");
    }
    Ok(())
}
