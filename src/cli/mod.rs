//! The command line (clap derive). Nothing else in callvault sees raw arguments; every
//! setting has an environment variable behind it (a choice of calls or records, made each
//! time, has none). Only the definitions live here: `app::args` parses them with the
//! configuration file applied and turns them into typed settings. The groups of flags
//! several commands share are in `groups`, each declared once.

mod groups;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::config::LedgerLocation;
pub use groups::{
    AccountArgs, ArchiveStoreArgs, CallSelection, CallSlice, CallTimes, CallbackArgs, Chosen,
    CompanyArg, LayoutArgs, LedgerArgs, ManifestsArgs, ProofArgs, ProviderArgs, RequesterArgs,
    RetentionArgs, StoreArgs, Window,
};
use groups::{parse_location, parse_secret};

#[derive(Debug, Parser)]
#[command(
    name = "callvault",
    version,
    about = "Archive call recordings into S3-compatible storage before the provider deletes them"
)]
pub struct Cli {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Log format on standard error.
    #[arg(long, env = "CALLVAULT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `callvault=debug`. Unless
    /// given (or CALLVAULT_LOG is), RUST_LOG is used when set; `demo` logs warnings only.
    #[arg(long, env = "CALLVAULT_LOG", default_value = "info", global = true)]
    pub log: String,
    /// The provider's zone for its zone-less times (the ledger stores UTC).
    #[arg(
        long,
        env = "CALLVAULT_PROVIDER_TZ",
        default_value = "+08:00",
        global = true
    )]
    pub provider_tz: String,
    /// A TOML file of settings (keys are the long flag names; `[aws]` holds the AWS_*
    /// settings). Precedence: flag > environment > file > default.
    #[arg(long, env = "CALLVAULT_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Progress on standard error: a bar on a terminal, periodic log lines otherwise.
    #[arg(long, env = "CALLVAULT_PROGRESS", value_enum, default_value_t = ProgressMode::Auto, global = true)]
    pub progress: ProgressMode,
    /// How often progress lines are logged when there is no bar.
    #[arg(long, env = "CALLVAULT_PROGRESS_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s", global = true)]
    pub progress_interval: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when standard error is a terminal and logs are human, else lines.
    Auto,
    Bar,
    Lines,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// By file extension (`.csv`), else by the first character (`{` or `[` means JSON).
    Auto,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load call records (the provider's callback JSON: JSON lines or an array) into the ledger.
    Import(ImportArgs),
    /// One archival pass: archive every due record, then exit.
    Run(RunArgs),
    /// Counts per state, the oldest pending call, calls near deletion, the last run and sync.
    Status(StatusArgs),
    /// Read the provider's bill list for a window and store the calls the ledger lacks
    /// (their callback never came).
    Sync(SyncArgs),
    /// Per day and company: calls the provider listed, in the ledger, archived, pending,
    /// failed, without recording, found only by sync, and at risk.
    Completeness(CompletenessArgs),
    /// Receive the provider's call-record callbacks into the ledger; with `--schedule`, also
    /// run archival passes on that schedule (one process for a VM or a pod).
    Serve(ServeArgs),
    /// Run everything on embedded defaults: simulator, fresh ledger, local directory.
    Demo(DemoArgs),
    /// Serve the built-in provider simulator (for trying callvault by hand).
    Simulator(SimulatorArgs),
    /// Read archived objects back and compare them with the ledger, or (--manifests) check
    /// the manifest chain.
    Verify(VerifyArgs),
    /// List failed and expired records with their last error and attempt count.
    Failures(FailuresArgs),
    /// Put chosen failed records back to pending.
    Retry(RetryArgs),
    /// Bring the ledger's schema up to date and exit (every command also does this on open,
    /// under a lock; this is for operators who run migrations as a step of their own).
    Migrate(MigrateArgs),
    /// Ledger maintenance: `ledger copy` moves a whole ledger to another backend.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Place a legal hold on chosen calls: recorded in the ledger (who, when, why, which
    /// calls) and set on each recording and sidecar in the bucket. A held call is never erased.
    Hold(HoldArgs),
    /// End legal holds on chosen calls (the bucket's hold is cleared once no hold keeps a call).
    Release(ReleaseArgs),
    /// List the legal holds that keep calls now (or, with --all, every hold).
    Holds(HoldsArgs),
    /// Erase chosen calls: their recordings and sidecars (every version) leave the store, the
    /// ledger keeps a tombstone and forgets their personal data. A dry run unless --yes.
    Erase(EraseArgs),
    /// Erase the calls whose retention has ended (counted from each call's start). A dry run
    /// unless --yes.
    Expire(ExpireArgs),
    /// Search the ledger's calls by number (or its last digits), extension, agent, company,
    /// date range, state or uuid; sorted by call start. Written to the access log.
    Find(FindArgs),
    /// Copy recordings out of the store into files, checking each one's SHA-256 against the
    /// ledger while streaming; the sidecar is written beside each. Written to the access log.
    Get(GetArgs),
    /// Print a presigned URL for one recording (S3 stores), for someone without
    /// credentials. Written to the access log.
    Link(LinkArgs),
    /// Read the access log: who found, copied, linked or played which calls, when and why.
    AccessLog(AccessLogArgs),
    /// Hand chosen calls over as a bundle that stands on its own (a directory, `.zip` or
    /// `.tar`): their lines with inclusion proofs, the signed and time-stamped checkpoints,
    /// the audit trail, and with `--with-recordings` the recordings. Written to the access
    /// log. `export verify BUNDLE` checks one.
    Export(ExportCommand),
    /// Users of the web page (`serve --ui`): `user add NAME` writes one to the users file.
    #[command(subcommand)]
    User(UserCommand),
    /// The provider accounts this deployment archives (`[accounts.<name>]` in the settings
    /// file), each with its settings (secrets shown as set or unset); `--check` logs in to
    /// each provider account and checks each store.
    Accounts(AccountsArgs),
    /// The operator's signing key for the Merkle log's checkpoints: `keys generate --out
    /// FILE` writes a new ed25519 key to FILE (mode 0600) and its public key to FILE.pub.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new signing key: the private key to FILE (mode 0600, never over an existing
    /// file), the public key to FILE.pub (give that one to whoever checks your exports).
    Generate(KeysGenerateArgs),
}

#[derive(Debug, Args)]
pub struct KeysGenerateArgs {
    /// Where the private key goes.
    #[arg(long)]
    pub out: PathBuf,
    /// The key's name, as signatures name it (no spaces or '+').
    #[arg(long, default_value = "callvault")]
    pub name: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AccountsArgs {
    #[command(subcommand)]
    pub command: Option<AccountsCommand>,
    /// Also log in to each account's provider and check its store (as a run does first).
    #[arg(long)]
    pub check: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub store: ArchiveStoreArgs,
    #[command(flatten)]
    pub callback: CallbackArgs,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Move every row of account OLD in the ledger (its calls, attempts, runs, syncs,
    /// manifests, holds, erasures, verifications and access log) to the name NEW, in one
    /// transaction; NEW must have no rows. For a deployment that ran as the one account
    /// `default` and now declares its accounts: `callvault accounts rename default acme`.
    /// The objects in the store stay where they are (their keys are in the ledger).
    Rename(AccountsRenameArgs),
}

#[derive(Debug, Args)]
pub struct AccountsRenameArgs {
    /// The account whose rows move.
    pub old: String,
    /// The name they move to (a short slug).
    pub new: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user to the web page's users file, or set a new password for one. The password
    /// is read from standard input (one line), or asked for without echo on a terminal;
    /// never from the command line. Only its Argon2id hash is written.
    Add(UserAddArgs),
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The user's name: letters, digits and `. _ @ -`.
    pub name: String,
    /// An account whose calls the user sees (repeatable, or separate with commas). Without
    /// it or --all-accounts, a user keeps the accounts it had (`default` for a new one).
    #[arg(
        long = "account",
        value_name = "NAME",
        value_delimiter = ',',
        conflicts_with = "all_accounts"
    )]
    pub accounts: Vec<String>,
    /// The user sees every account the page serves (the outsourcer's own compliance staff).
    #[arg(long)]
    pub all_accounts: bool,
    /// No password: the user signs in only through the authenticating proxy
    /// (`serve --ui-proxy-header`); the line says which accounts it sees.
    #[arg(long)]
    pub proxy_only: bool,
    #[arg(
        long,
        env = "CALLVAULT_UI_USERS_FILE",
        default_value = "callvault-users"
    )]
    pub users_file: PathBuf,
}

/// The web page's settings (`serve --ui`).
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Serve the web page under `/ui` (search, call pages, player, download, dashboard). Without
    /// `--callback-secret` the process serves the page alone, without the callback receiver.
    #[arg(long, env = "CALLVAULT_UI")]
    pub ui: bool,
    /// The page's users: `name:argon2-hash:accounts` lines, written by `callvault user add`
    /// (or a Kubernetes Secret mounted as a file). Read at every request.
    #[arg(
        long,
        env = "CALLVAULT_UI_USERS_FILE",
        default_value = "callvault-users"
    )]
    pub ui_users_file: PathBuf,
    /// Trust this header as the user's name (`X-Forwarded-User`, `X-Auth-Request-User`), set
    /// by an authenticating proxy such as oauth2-proxy, from `--ui-proxy-networks` only.
    #[arg(
        long,
        env = "CALLVAULT_UI_PROXY_HEADER",
        requires = "ui_proxy_networks"
    )]
    pub ui_proxy_header: Option<String>,
    /// The proxy's networks (comma-separated CIDRs): the header is ignored from anywhere else.
    #[arg(
        long,
        env = "CALLVAULT_UI_PROXY_NETWORKS",
        value_delimiter = ',',
        requires = "ui_proxy_header"
    )]
    pub ui_proxy_networks: Vec<ipnet::IpNet>,
    /// How long a login lasts.
    #[arg(long, env = "CALLVAULT_UI_SESSION_TTL", value_parser = humantime::parse_duration, default_value = "8h")]
    pub ui_session_ttl: Duration,
}

/// The store whose objects a hold, release or erasure acts on, laid out as `run` writes it.
#[derive(Debug, Args)]
pub struct RetentionStoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Who acts, as the ledger records it (default: the operating system's user).
    #[arg(long, env = "CALLVAULT_ACTOR")]
    pub actor: Option<String>,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub select: CallSelection,
    /// Why (a case reference): recorded with the hold.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub store: RetentionStoreArgs,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub select: CallSelection,
    /// Only from this hold (`hold-…`, as `callvault holds` lists it); default every hold.
    #[arg(long)]
    pub hold: Option<String>,
    /// Why the hold ends: recorded with the release.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub store: RetentionStoreArgs,
}

#[derive(Debug, Args)]
pub struct HoldsArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// Also the holds that keep no call any more.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub select: CallSelection,
    /// Why (a request or case reference): recorded in each tombstone.
    #[arg(long)]
    pub reason: String,
    /// Erase for real; without it, only say what would go and what would not.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub store: RetentionStoreArgs,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// The retention: calls that started at least this long ago go (`7y`, `18mo`, `90d`).
    #[arg(long)]
    pub older_than: String,
    #[command(flatten)]
    pub company: CompanyArg<Chosen>,
    /// Erase for real; without it, only say what would go and what would not.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub store: RetentionStoreArgs,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub select: CallSelection,
    /// The agent: `crmid` or `userid`, exactly.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only calls in these states (pending, in_progress, archived, failed, expired,
    /// no_recording; repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub state: Vec<String>,
    /// At most this many calls.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Continue after this cursor (printed at the end of a full page).
    #[arg(long)]
    pub after: Option<String>,
    /// JSON lines on standard output, one call a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub requester: RequesterArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// The calls whose recordings to copy out.
    #[arg(required = true, num_args = 1..)]
    pub uuids: Vec<String>,
    /// The directory to write them into (created if missing).
    #[arg(short = 'o', long = "output", default_value = ".")]
    pub output: PathBuf,
    // The store the recordings are in.
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub requester: RequesterArgs,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// The call whose recording to link to.
    pub uuid: String,
    /// How long the link works (at most 7 days).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15m")]
    pub expires: Duration,
    // The store the recording is in: an `s3://` store (a local directory cannot sign links).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print `{"uuid", "url", "expires_at"}` as JSON instead of the bare URL.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub requester: RequesterArgs,
}

#[derive(Debug, Args)]
pub struct AccessLogArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// Entries at or after this: a date (in the provider's zone), a time, or a duration
    /// ago (`24h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only what this actor did.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries that touched this call.
    #[arg(long)]
    pub uuid: Option<String>,
    /// At most this many entries (oldest first).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// JSON lines on standard output, one entry a line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Copy every table of one ledger into another, empty one (for example from
    /// `sqlite://callvault.db` to `postgres://…`), then check row counts and a SHA-256 of
    /// every table on both sides. Exits 0 only when they all match.
    Copy(LedgerCopyArgs),
    /// Rebuild a lost ledger from the bucket alone: the manifests (the chain, and the calls
    /// each lists) and the sidecars beside the recordings (the provider's records, and the
    /// recordings archived after the last manifest). Prints what it found; exits 1 when the
    /// bucket is inconsistent (a recording without its sidecar, a sidecar without its
    /// recording, a broken chain), 2 when the ledger already holds calls.
    Rebuild(LedgerRebuildArgs),
}

#[derive(Debug, Args)]
pub struct LedgerRebuildArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// Read the store (the only source there is; the flag says what the command does).
    #[arg(long, required = true)]
    pub from_store: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub manifests: ManifestsArgs,
    /// Add to a ledger that already holds calls: what it knows is left as it is, the rest
    /// is added (also: to finish a rebuild that was interrupted).
    #[arg(long)]
    pub merge: bool,
    /// Sidecars read at once.
    #[arg(long, env = "CALLVAULT_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LedgerCopyArgs {
    /// The ledger to copy from (left unchanged).
    #[arg(long, value_parser = parse_location)]
    pub from: LedgerLocation,
    /// The ledger to copy into: must be empty (a new database; its schema is created).
    #[arg(long, value_parser = parse_location)]
    pub to: LedgerLocation,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to import; `-` (the default) reads standard input.
    #[arg(default_value = "-")]
    pub files: Vec<PathBuf>,
    /// JSON (callbacks: JSON lines, arrays, pretty-printed) or CSV (a header row of the
    /// callback's field names).
    #[arg(long, env = "CALLVAULT_IMPORT_FORMAT", value_enum, default_value_t = ImportFormat::Auto)]
    pub format: ImportFormat,
    /// The account the calls belong to (required when several are declared).
    #[command(flatten)]
    pub accounts: AccountArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the receiver listens on.
    #[arg(long, env = "CALLVAULT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub callback: CallbackArgs,
    /// Only accept callbacks from these networks (comma-separated CIDRs); all when empty.
    #[arg(long, env = "CALLVAULT_ALLOW_FROM", value_delimiter = ',')]
    pub allow_from: Vec<ipnet::IpNet>,
    /// Largest callback body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "CALLVAULT_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Run archival passes on this schedule (cron syntax with seconds:
    /// `sec min hour day month weekday`, e.g. `0 */15 * * * *`), never two at a time.
    #[arg(long, env = "CALLVAULT_SCHEDULE")]
    pub schedule: Option<String>,
    /// Run syncs with the provider's bill list on this schedule (same syntax), never two at
    /// a time; each continues from the ledger's checkpoint.
    #[arg(long, env = "CALLVAULT_SYNC_SCHEDULE")]
    pub sync_schedule: Option<String>,
    /// How far before the checkpoint each scheduled sync starts again.
    #[arg(long, env = "CALLVAULT_SYNC_OVERLAP", value_parser = humantime::parse_duration, default_value = "1day")]
    pub sync_overlap: Duration,
    /// How the callback is answered: `json` (`{"ok":true,...}`, 4xx/5xx on refusal) or
    /// `text` (HTTP 200 with `1` when stored, `0` when not, as one public client of this
    /// provider answers).
    #[arg(long, env = "CALLVAULT_CALLBACK_ANSWER", value_enum, default_value_t = CallbackAnswer::Json)]
    pub callback_answer: CallbackAnswer,
    #[command(flatten)]
    pub ui: Box<UiArgs>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallbackAnswer {
    Json,
    Text,
}

/// A sync reads the bills of a window; without one, from its checkpoint.
#[derive(Debug, Clone)]
pub struct SyncWindow;
impl Window for SyncWindow {
    const SINCE_ENV: Option<&'static str> = Some("CALLVAULT_SYNC_SINCE");
    const UNTIL_ENV: Option<&'static str> = Some("CALLVAULT_SYNC_UNTIL");
    const SINCE_HELP: &'static str = "Read the bills of calls that started at or after this \
        date (`2026-08-01`) or time, in the provider's zone; without it, from the last sync's \
        checkpoint less the overlap (the first sync reads the whole retention)";
    const UNTIL_HELP: &'static str = "Up to the end of this date (or this time); now when unset";
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub times: CallTimes<SyncWindow>,
    /// How far before the checkpoint a sync without `--since` starts again.
    #[arg(long, env = "CALLVAULT_SYNC_OVERLAP", value_parser = humantime::parse_duration, default_value = "1day")]
    pub overlap: Duration,
    /// The provider deletes recordings this many days after the call.
    #[arg(long, env = "CALLVAULT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// Tries per bill page for passing errors.
    #[arg(long, env = "CALLVAULT_ATTEMPTS_PER_RUN", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts_per_page: u32,
    /// First backoff between tries (doubles).
    #[arg(long, env = "CALLVAULT_RETRY_DELAY", value_parser = humantime::parse_duration, default_value = "1s")]
    pub retry_delay: Duration,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// Completeness is reported per day, over the provider's retention by default.
#[derive(Debug, Clone)]
pub struct CompletenessWindow;
impl Window for CompletenessWindow {
    const SINCE_ENV: Option<&'static str> = Some("CALLVAULT_COMPLETENESS_SINCE");
    const UNTIL_ENV: Option<&'static str> = Some("CALLVAULT_COMPLETENESS_UNTIL");
    const SINCE_HELP: &'static str =
        "From this date (provider's zone); default: the provider's retention ago";
    const UNTIL_HELP: &'static str = "Up to the end of this date; default: now";
}

#[derive(Debug, Args)]
pub struct CompletenessArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub times: CallTimes<CompletenessWindow>,
    #[arg(long, env = "CALLVAULT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    #[arg(long)]
    pub json: bool,
}

/// A run's slice, also from the environment (a scheduled job's calls).
#[derive(Debug, Clone)]
pub struct RunWindow;
impl Window for RunWindow {
    const SINCE_ENV: Option<&'static str> = Some("CALLVAULT_SINCE");
    const UNTIL_ENV: Option<&'static str> = Some("CALLVAULT_UNTIL");
    const COMPANY_ENV: Option<&'static str> = Some("CALLVAULT_COMPANY");
}

/// `run`'s records in flight when `--concurrency` is not given.
pub const DEFAULT_RUN_CONCURRENCY: u16 = 64;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    // Where recordings go, and how they are written.
    #[command(flatten)]
    pub store: ArchiveStoreArgs,
    /// Records in flight at once (link request, download, upload). Memory is bounded by
    /// `--memory-budget-mib`, the provider's API by `--api-rate`, not by this.
    #[arg(long, env = "CALLVAULT_CONCURRENCY", default_value_t = DEFAULT_RUN_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Claim at most this many records.
    #[arg(long, env = "CALLVAULT_MAX_RECORDS")]
    pub max_records: Option<u64>,
    /// Stop claiming new records this long after the start (e.g. `50m`).
    #[arg(long, env = "CALLVAULT_DEADLINE", value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// Show what would be archived; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long a claim is held without renewal; a killed run's records are reclaimed after it.
    #[arg(long, env = "CALLVAULT_LEASE", value_parser = humantime::parse_duration, default_value = "10m")]
    pub lease: Duration,
    /// On SIGTERM/SIGINT, in-flight transfers get this long to finish before they are aborted.
    #[arg(long, env = "CALLVAULT_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// The provider deletes recordings this many days after the call.
    #[arg(long, env = "CALLVAULT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// Attempts per record within one run.
    #[arg(long, env = "CALLVAULT_ATTEMPTS_PER_RUN", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts_per_run: u32,
    /// First backoff between attempts (doubles, with jitter).
    #[arg(long, env = "CALLVAULT_RETRY_DELAY", value_parser = humantime::parse_duration, default_value = "1s")]
    pub retry_delay: Duration,
    /// An answer that the recording cannot be had (provider code 1002, HTTP 404/410 on a
    /// fresh link, an illegal file name) fails the record only once it came back on this
    /// many attempts...
    #[arg(long, env = "CALLVAULT_GIVE_UP_ANSWERS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub give_up_answers: u32,
    /// ...spread over at least this long (past the retention horizon a vanished file is
    /// `expired` at once).
    #[arg(long, env = "CALLVAULT_GIVE_UP_WINDOW", value_parser = humantime::parse_duration, default_value = "1h")]
    pub give_up_window: Duration,
    // Only these calls.
    #[command(flatten)]
    pub slice: CallSlice<RunWindow>,
    /// Push the run's metrics to this Prometheus Pushgateway (`http://host:9091`).
    #[arg(long, env = "CALLVAULT_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
    /// Write the run's metrics here in Prometheus text format (node-exporter textfile
    /// collector: a `.prom` file in its directory); replaced atomically.
    #[arg(long, env = "CALLVAULT_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    // Signing and time-stamping the log's checkpoints.
    #[command(flatten)]
    pub proof: ProofArgs,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long, env = "CALLVAULT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    #[command(flatten)]
    pub accounts: AccountArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo's ledger and archive go (a fresh folder inside it each time).
    #[arg(long, default_value = "callvault-demo")]
    pub dir: PathBuf,
    /// How many sample calls.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    /// Show the log lines (`info`) besides the story; RUST_LOG or `--log` choose others.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct SimulatorArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Sample recordings to serve.
    #[arg(long, default_value_t = 20)]
    pub recordings: usize,
    /// Serve every recording at this size instead of the usual mix (for trying large files).
    #[arg(long)]
    pub recording_size_mib: Option<u64>,
    /// Fault: every Nth link request invalidates all tokens (answers ret 600).
    #[arg(long)]
    pub invalidate_tokens_every: Option<u32>,
    /// Fault: every Nth link request answers code 1010 and invalidates all tokens.
    #[arg(long)]
    pub extension_exception_every: Option<u32>,
    /// Write the sample calls' callbacks (JSON lines) here, ready for `callvault import`.
    #[arg(long)]
    pub callbacks_out: Option<PathBuf>,
    /// Post the sample calls' callbacks to this receiver address
    /// (`http://127.0.0.1:8080/callback/<secret>`).
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Fault: drop this percentage of the callbacks posted to `--callback-url` (the bill
    /// list still names them).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_callbacks: u8,
    /// Bills carry their call's uuid (by default they do not, like the clients seen).
    #[arg(long)]
    pub bills_with_uuid: bool,
    #[arg(long, env = "CALLVAULT_APPID", default_value = "demo-app")]
    pub appid: String,
    #[arg(
        long,
        env = "CALLVAULT_ACCESSKEY",
        default_value = "demo-secret-key",
        hide_env_values = true,
        hide_default_value = true,
        value_parser = parse_secret
    )]
    pub accesskey: SecretString,
}

/// What `verify` reads back, also from the environment (a scheduled check).
#[derive(Debug, Clone)]
pub struct VerifyWindow;
impl Window for VerifyWindow {
    const SINCE_ENV: Option<&'static str> = Some("CALLVAULT_VERIFY_SINCE");
    const UNTIL_ENV: Option<&'static str> = Some("CALLVAULT_VERIFY_UNTIL");
    const COMPANY_ENV: Option<&'static str> = Some("CALLVAULT_VERIFY_COMPANY");
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    // The store to read back.
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub chain: ManifestsArgs,
    // Only these calls.
    #[command(flatten)]
    pub slice: CallSlice<VerifyWindow>,
    /// Read back only N records, or P% of them (`5%`), picked at random.
    #[arg(long, env = "CALLVAULT_VERIFY_SAMPLE")]
    pub sample: Option<String>,
    /// Check the manifest chain (from the bucket, then against the ledger) instead of
    /// reading the objects back.
    #[arg(long, env = "CALLVAULT_VERIFY_MANIFESTS")]
    pub manifests: bool,
    /// Objects read at once.
    #[arg(long, env = "CALLVAULT_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// The retention policy to check each object's lock against.
    #[command(flatten)]
    pub retention: RetentionArgs,
}

#[derive(Debug, Args)]
pub struct FailuresArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// Only records whose last error has this code.
    #[arg(long, env = "CALLVAULT_FAILURES_ERROR_CODE")]
    pub error_code: Option<String>,
    /// JSON lines on standard output, one record a line.
    #[arg(long)]
    pub json: bool,
}

/// Which records are chosen is a decision made each time: no environment variables here.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["uuid", "retry_error_code", "all"])))]
pub struct RetryArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    /// These records (repeat the flag, or separate with commas).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub uuid: Vec<String>,
    /// Every failed record whose last error has this code.
    #[arg(long = "error-code", id = "retry_error_code")]
    pub error_code: Option<String>,
    /// Every failed record.
    #[arg(long)]
    pub all: bool,
    /// Expired records too (the provider may no longer have their files).
    #[arg(long)]
    pub include_expired: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecars(args: &[&str]) -> bool {
        let cli = Cli::try_parse_from([&["callvault", "run"], args].concat()).unwrap();
        match cli.command {
            Command::Run(run) => run.store.layout.sidecars(),
            _ => unreachable!(),
        }
    }

    /// (CALLVAULT_SIDECAR is exercised through the binary, in the integration tests.)
    #[test]
    fn sidecars_are_on_unless_switched_off() {
        assert!(sidecars(&[]));
        assert!(sidecars(&["--sidecar"]));
        assert!(sidecars(&["--sidecar", "yes"]));
        assert!(!sidecars(&["--no-sidecar"]));
        assert!(!sidecars(&["--sidecar", "false"]));
        assert!(!sidecars(&["--no-sidecar", "--sidecar"]));
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["callvault", "run"], args].concat())?;
        match cli.command {
            Command::Run(run) => Ok(run),
            _ => unreachable!(),
        }
    }

    /// `run`'s defaults since issue 20: many records in flight, bounded by the memory budget
    /// and the provider's pace; the CRC64NVME checksum. `unlimited` paces nothing.
    #[test]
    fn run_defaults_to_64_in_flight_within_a_memory_budget_and_a_pace() {
        let run = run_args(&[]).unwrap();
        assert_eq!(run.concurrency, 64);
        assert_eq!(run.provider.api_rate, Some(500.0));
        assert_eq!(run.store.memory_budget_mib, 128);
        assert_eq!(run.store.store_checksum_algorithm, "crc64nvme");
        let unpaced = run_args(&["--api-rate", "unlimited"]).unwrap();
        assert_eq!(unpaced.provider.api_rate, Some(f64::INFINITY));
        assert_eq!(
            run_args(&["--api-rate", "2.5"]).unwrap().provider.api_rate,
            Some(2.5)
        );
        for bad in [
            &["--api-rate", "0"][..],
            &["--api-rate", "-3"],
            &["--api-rate", "fast"],
        ] {
            assert!(run_args(bad).is_err(), "{bad:?}");
        }
        assert!(run_args(&["--store-checksum-algorithm", "md5"]).is_err());
        let sha = run_args(&[
            "--store-checksum-algorithm",
            "sha256",
            "--memory-budget-mib",
            "512",
        ])
        .unwrap();
        assert_eq!(sha.store.store_checksum_algorithm, "sha256");
        assert_eq!(sha.store.memory_budget_mib, 512);
    }

    /// clap's own checks of the definitions (ids, `requires`, groups), for every command.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The call-choosing flags are declared once, read from each command's own variables.
    #[test]
    fn each_command_reads_the_call_flags_from_its_own_variables() {
        let envs = |sub: &str| -> Vec<(String, Option<String>)> {
            use clap::CommandFactory;
            let cli = Cli::command();
            let cmd = cli.find_subcommand(sub).unwrap();
            ["since", "until", "company"]
                .iter()
                .filter_map(|id| cmd.get_arguments().find(|a| a.get_id() == *id))
                .map(|a| {
                    let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                    (a.get_id().to_string(), env)
                })
                .collect()
        };
        let named = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            pairs
                .iter()
                .map(|(id, env)| (id.to_string(), env.map(str::to_owned)))
                .collect()
        };
        assert_eq!(
            envs("run"),
            named(&[
                ("since", Some("CALLVAULT_SINCE")),
                ("until", Some("CALLVAULT_UNTIL")),
                ("company", Some("CALLVAULT_COMPANY")),
            ])
        );
        assert_eq!(
            envs("verify"),
            named(&[
                ("since", Some("CALLVAULT_VERIFY_SINCE")),
                ("until", Some("CALLVAULT_VERIFY_UNTIL")),
                ("company", Some("CALLVAULT_VERIFY_COMPANY")),
            ])
        );
        assert_eq!(
            envs("sync"),
            named(&[
                ("since", Some("CALLVAULT_SYNC_SINCE")),
                ("until", Some("CALLVAULT_SYNC_UNTIL")),
            ])
        );
        for chosen in ["find", "hold", "release", "erase"] {
            assert_eq!(
                envs(chosen),
                named(&[("since", None), ("until", None), ("company", None)]),
                "{chosen}"
            );
        }
    }
}

/// `export` writes a bundle; `export verify` checks one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportCommand {
    #[command(subcommand)]
    pub verify: Option<ExportSub>,
    #[command(flatten)]
    pub args: ExportArgs,
}

#[derive(Debug, Subcommand)]
pub enum ExportSub {
    /// Check a bundle with nothing else: recordings against their lines, each line's
    /// inclusion in its checkpoint, checkpoints' signatures and time-stamp tokens, and
    /// consistency between checkpoints. Exits 1 on any failure, naming each.
    Verify(ExportVerifyArgs),
}

#[derive(Debug, Args)]
pub struct ExportVerifyArgs {
    /// The bundle: a directory, a `.zip` or a `.tar`.
    pub bundle: PathBuf,
    /// PEM certificates the time-stamping authorities' chains must end in (without it, the
    /// certificates inside the bundle are used, and the report says so).
    #[arg(long, value_name = "FILE")]
    pub tsa_roots: Option<PathBuf>,
    /// The operator's public key (`FILE.pub`) the checkpoints must be signed with (without
    /// it, the keys inside the bundle are used, and the report says so).
    #[arg(long, value_name = "FILE")]
    pub log_key: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// A load file for e-discovery review tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadFile {
    /// A Concordance DAT (`calls.dat`).
    Dat,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub accounts: AccountArgs,
    #[command(flatten)]
    pub select: CallSelection,
    /// Where the bundle goes: a directory (new, or empty), or one file `NAME.zip` / `NAME.tar`.
    #[arg(long, value_name = "DIR|FILE", required = true)]
    pub out: Option<PathBuf>,
    /// Why the calls are handed over (a regulator's request, a case number): kept in the
    /// access log and in the bundle.
    #[arg(long, required = true)]
    pub reason: Option<String>,
    /// Who hands them over (default: the OS user).
    #[arg(long, env = "CALLVAULT_ACTOR")]
    pub actor: Option<String>,
    /// Also put the recordings in the bundle, streamed from the store and re-hashed on the
    /// way out (a recording whose SHA-256 is not the archive's fails the export).
    #[arg(long)]
    pub with_recordings: bool,
    /// Also write a load file for review tools.
    #[arg(long, value_enum)]
    pub load_file: Option<LoadFile>,
    /// The operator's key signs `SHA256SUMS` (`SHA256SUMS.sig`); the authorities date it
    /// (`SHA256SUMS.tsr`).
    #[command(flatten)]
    pub proof: ProofArgs,
    // The store the recordings, manifests and checkpoints are in.
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub chain: ManifestsArgs,
    /// The provider deletes recordings this many days after the call (for the completeness
    /// of the calls' days).
    #[arg(long, env = "CALLVAULT_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// Print the export's report (files, calls, bytes) as JSON.
    #[arg(long)]
    pub json: bool,
}
