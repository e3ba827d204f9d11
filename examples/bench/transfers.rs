//! One measured transfer of a set of recordings by each contender: callvault (the real
//! binary), the ceiling (object_store from memory) and rclone `copyurl`.

use anyhow::bail;

use crate::report::{CALLVAULT, CEILING, CEILING_PARTS, RCLONE, Transfer};
use crate::rig::Rig;
use crate::{MIB, PART_MIB};

fn print(t: &Transfer) {
    println!(
        "  {:<10} {:<52} c={:<3} {:>7.2}s {:>8.1} rec/s {:>7.1} MB/s{}",
        t.set,
        t.tool,
        t.concurrency,
        t.wall.as_secs_f64(),
        t.per_second(),
        t.mb_per_second(),
        t.peak_rss_kib.map_or(String::new(), |k| format!(
            " rss {:.1} MiB",
            k as f64 / 1024.0
        ))
    );
}

pub async fn callvault(
    rig: &Rig,
    set: &str,
    names: &[String],
    size: u64,
    concurrency: usize,
) -> anyhow::Result<Transfer> {
    let ledger = rig.ledger_with("run", names).await?;
    let bucket = rig.bucket()?;
    let cpu_before = crate::machine::cpu_jiffies();
    let (child, _) = rig
        .callvault_run(&ledger, &bucket, concurrency, PART_MIB, names.len())
        .await?;
    check_stored(rig, &bucket, names.len(), size)?;
    rig.drop_bucket(&bucket)?;
    rig.remove_ledger(&ledger);
    let active = concurrency.min(names.len()) as u64;
    let t = Transfer {
        set: set.to_owned(),
        tool: CALLVAULT,
        concurrency,
        records: names.len(),
        bytes: names.len() as u64 * size,
        wall: child.wall,
        walls: vec![child.wall],
        peak_rss_kib: Some(child.peak_rss_kib),
        rss_limit_kib: Some(64 * 1024 + active * PART_MIB as u64 * 1024),
    };
    print(&t);
    println!(
        "             callvault CPU {:.2}s ({:.0}% of one core); all CPUs {:.0}% busy",
        child.cpu.as_secs_f64(),
        child.cpu.as_secs_f64() / child.wall.as_secs_f64() * 100.0,
        crate::machine::busy_since(cpu_before) * 100.0
    );
    Ok(t)
}

pub async fn ceiling(
    rig: &Rig,
    set: &str,
    contents: &[(String, bytes::Bytes)],
    concurrency: usize,
    parts_in_flight: usize,
) -> anyhow::Result<Transfer> {
    let bucket = rig.bucket()?;
    let cpu_before = crate::machine::cpu_jiffies();
    let part = PART_MIB * MIB as usize;
    let wall =
        crate::ceiling::upload(rig, &bucket, contents, concurrency, part, parts_in_flight).await?;
    let size = contents.first().map_or(0, |(_, b)| b.len() as u64);
    check_stored(rig, &bucket, contents.len(), size)?;
    rig.drop_bucket(&bucket)?;
    let t = Transfer {
        set: set.to_owned(),
        tool: if parts_in_flight > 1 {
            CEILING_PARTS
        } else {
            CEILING
        },
        concurrency,
        records: contents.len(),
        bytes: contents.iter().map(|(_, b)| b.len() as u64).sum(),
        wall,
        walls: vec![wall],
        peak_rss_kib: None,
        rss_limit_kib: None,
    };
    print(&t);
    println!(
        "             all CPUs {:.0}% busy",
        crate::machine::busy_since(cpu_before) * 100.0
    );
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
    let wall = crate::rclone::copy_all(rig, &bucket, names, parallel, PART_MIB).await?;
    check_stored(rig, &bucket, names.len(), size)?;
    rig.drop_bucket(&bucket)?;
    let t = Transfer {
        set: set.to_owned(),
        tool: RCLONE,
        concurrency: parallel,
        records: names.len(),
        bytes: names.len() as u64 * size,
        wall,
        walls: vec![wall],
        peak_rss_kib: None,
        rss_limit_kib: None,
    };
    print(&t);
    Ok(t)
}

/// Fails unless the bucket holds at least `n` objects' worth of bytes.
fn check_stored(rig: &Rig, bucket: &str, n: usize, size: u64) -> anyhow::Result<()> {
    let (bytes, files) = rig.bucket_usage(bucket);
    if files < n || bytes < n as u64 * size {
        bail!("{bucket} holds {files} files, {bytes} bytes; expected {n} objects of {size} bytes");
    }
    Ok(())
}
