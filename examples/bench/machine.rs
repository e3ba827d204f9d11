//! What the numbers were measured on: cores, memory, CPU model, kernel, toolchain, load.

use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total: String,
    pub cpu_model: String,
    pub kernel: String,
    pub rustc: String,
    pub rclone: String,
    pub sqlite: String,
    /// The server the PostgreSQL parts started, when they ran.
    pub postgres: Option<String>,
    /// The Garage server the transfers also ran against, when it ran.
    pub garage: Option<String>,
    pub date: String,
    pub load_before: String,
}

impl Machine {
    pub async fn describe(rclone: String) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let mem_total = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "unknown".into(),
                |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
            );
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            mem_total,
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            rustc: output("rustc", &["--version"]),
            rclone,
            sqlite: sqlite_version().await,
            postgres: None,
            garage: None,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            load_before: load(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("{program}: {e}"))
}

/// The SQLite library sqlx links (bundled), as the ledger uses it.
async fn sqlite_version() -> String {
    let Ok(pool) = sqlx::SqlitePool::connect("sqlite::memory:").await else {
        return "unknown".into();
    };
    let version: Result<String, _> = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&pool)
        .await;
    pool.close().await;
    version.unwrap_or_else(|_| "unknown".into())
}

/// Measures the CPU a transfer costs: this process (the simulator, the S3 server, the
/// ceiling's client) plus its waited-for children (callvault, rclone), and how busy the
/// whole machine was meanwhile (other tenants included).
pub struct CpuMeter {
    jiffies: (u64, u64),
    own: Duration,
}

impl CpuMeter {
    pub fn start() -> Self {
        Self {
            jiffies: cpu_jiffies(),
            own: own_cpu(),
        }
    }

    /// The benchmark's CPU time since the start, and the busy share of all CPUs.
    pub fn stop(&self) -> (Duration, f64) {
        let now = cpu_jiffies();
        let busy = (now.0 - self.jiffies.0) as f64 / (now.1 - self.jiffies.1).max(1) as f64;
        (own_cpu().saturating_sub(self.own), busy)
    }
}

/// utime + stime + cutime + cstime of this process (fields 14 to 17 of /proc/self/stat).
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

/// Clock ticks per second in /proc (`getconf CLK_TCK`), 100 on Linux.
pub const USER_HZ: u64 = 100;

/// Busy and total jiffies of all CPUs so far (the `cpu` line of /proc/stat).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
