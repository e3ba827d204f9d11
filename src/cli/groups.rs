//! The groups of flags several commands share, each declared once here and flattened
//! (`#[command(flatten)]`) into the commands that use it, so that a flag's name, variable,
//! default and help cannot drift apart between commands. Each group becomes one domain
//! value in `app::args` (a `CallQuery`, a `Slice`, a `StoreConfig`, a `ProviderConfig`,
//! a `LedgerSettings`), and nowhere else.
//!
//! The call-choosing flags mean the same in every command, but some commands read them
//! from environment variables of their own (`CALLVAULT_SINCE` for `run`,
//! `CALLVAULT_VERIFY_SINCE` for `verify`) and others from none (a hold's calls are chosen
//! each time). A [`Window`] names those per command: the flags stay declared once, and
//! only what differs is said where it differs.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use crate::config::LedgerLocation;

/// The ledger every command opens (global options).
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The ledger: `sqlite://path/to/ledger.db`, or `postgres://user:password@host/db` for
    /// many workers (prefer the variable for a password: a flag shows in the process list;
    /// callvault prints the location with its password hidden).
    #[arg(
        id = "ledger",
        long = "ledger",
        value_name = "LEDGER",
        env = "CALLVAULT_LEDGER",
        default_value = "sqlite://callvault.db",
        hide_env_values = true,
        value_parser = parse_location,
        global = true
    )]
    pub location: LedgerLocation,
    /// How long a ledger write waits for another process's lock before the command fails.
    #[arg(long, env = "CALLVAULT_LEDGER_BUSY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s", global = true)]
    pub ledger_busy_timeout: Duration,
}

/// Any text is a location; whether it opens is the ledger's to say (and its error hides
/// the password).
pub(super) fn parse_location(raw: &str) -> Result<LedgerLocation, std::convert::Infallible> {
    Ok(LedgerLocation::new(raw))
}

/// A secret given as a flag or variable, wrapped at once so that no `Debug` shows it.
pub(super) fn parse_secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

/// The telephony provider: its API, credentials, pace and where downloads may go.
#[derive(Debug, Args, Clone)]
pub struct ProviderArgs {
    /// The provider's API endpoint.
    #[arg(long, env = "CALLVAULT_API_URL")]
    pub api_url: Option<String>,
    #[arg(long, env = "CALLVAULT_APPID")]
    pub appid: Option<String>,
    /// Prefer the environment variable: a flag shows in the process list.
    #[arg(long, env = "CALLVAULT_ACCESSKEY", hide_env_values = true, value_parser = parse_secret)]
    pub accesskey: Option<SecretString>,
    /// Limit for one API request.
    #[arg(long, env = "CALLVAULT_API_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub api_timeout: Duration,
    /// At most this many provider API requests per second (link requests, bill pages and
    /// logins together, however many workers or `--concurrency`); `unlimited` for none.
    /// Server errors slow it down further.
    #[arg(long, env = "CALLVAULT_API_RATE", value_parser = parse_rate, default_value = DEFAULT_API_RATE)]
    pub api_rate: Option<f64>,
    /// A download that sends nothing for this long is abandoned (and retried).
    #[arg(long, env = "CALLVAULT_STALL_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub stall_timeout: Duration,
    /// A host download links may point at besides the API's (repeatable; `*.example.com`
    /// for any name below example.com).
    #[arg(long, env = "CALLVAULT_DOWNLOAD_HOSTS", value_delimiter = ',')]
    pub download_host: Vec<String>,
    /// A network (CIDR) downloads may reach although it is loopback, private or link-local
    /// (repeatable); cloud-metadata addresses only when named exactly (`/32`).
    #[arg(long, env = "CALLVAULT_ALLOW_DOWNLOAD_NETWORKS", value_delimiter = ',')]
    pub allow_download_network: Vec<String>,
    /// Fetch recordings through this proxy (proxy environment variables are ignored).
    #[arg(long, env = "CALLVAULT_DOWNLOAD_PROXY")]
    pub download_proxy: Option<String>,
}

/// The receiver's callback secret (the top level's, or the `default` account's).
#[derive(Debug, Args, Clone)]
pub struct CallbackArgs {
    /// The shared secret in the callback address: the provider posts to
    /// `/callback/<secret>` (or `/callback?secret=<secret>`). At least 16 characters.
    #[arg(long, env = "CALLVAULT_CALLBACK_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub callback_secret: Option<SecretString>,
}

/// `--account`: which of the declared provider accounts a command works on (all when none
/// is named).
#[derive(Debug, Args, Clone, Default)]
pub struct AccountArgs {
    /// Only this provider account (repeatable, or separate with commas); all when none.
    #[arg(
        long = "account",
        value_name = "NAME",
        env = "CALLVAULT_ACCOUNTS",
        value_delimiter = ','
    )]
    pub account: Vec<String>,
}

/// The provider API's pace when `--api-rate` is not given: requests a second to each
/// provider account, however many transfers (see docs/operations.md, "Sizing a backfill").
pub const DEFAULT_API_RATE: &str = "500";

/// A rate in requests a second; `unlimited` (or `none`) is infinite, which paces nothing.
fn parse_rate(raw: &str) -> Result<f64, String> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("unlimited") || raw.eq_ignore_ascii_case("none") {
        return Ok(f64::INFINITY);
    }
    raw.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| {
            format!("{raw:?} is not a positive number of requests per second, nor `unlimited`")
        })
}

/// Where the archive is. Its credentials, region and endpoint are not flags: they come from
/// the standard `AWS_*` variables (or the configuration file's `[aws]`).
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The store: `s3://bucket/prefix` (credentials, region and endpoint from the standard
    /// AWS_* variables) or `file:///path`.
    #[arg(long, env = "CALLVAULT_STORE")]
    pub store: Option<String>,
}

/// Where the manifest chain is, below the store's prefix.
#[derive(Debug, Args, Clone)]
pub struct ManifestsArgs {
    /// Where the manifest chain goes, below the store's prefix.
    #[arg(long, env = "CALLVAULT_MANIFESTS_PREFIX", default_value = crate::store::DEFAULT_MANIFESTS_PREFIX)]
    pub manifests_prefix: String,
}

/// The self-describing archive: sidecars beside recordings, manifests under a prefix.
#[derive(Debug, Args, Clone)]
pub struct LayoutArgs {
    /// Write a JSON sidecar `<key>.json` (the call record and the archive facts) beside each
    /// recording (`--sidecar false` or `--no-sidecar` to switch off).
    #[arg(long, env = "CALLVAULT_SIDECAR", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub sidecar: bool,
    /// No sidecars (wins over `--sidecar` and CALLVAULT_SIDECAR).
    #[arg(long)]
    pub no_sidecar: bool,
    #[command(flatten)]
    pub manifests: ManifestsArgs,
}

impl LayoutArgs {
    pub fn sidecars(&self) -> bool {
        self.sidecar && !self.no_sidecar
    }
}

/// S3 Object Lock retention for every recording and its sidecar (both or neither).
#[derive(Debug, Args, Clone, Default)]
pub struct RetentionArgs {
    /// Object Lock mode: `governance` (administrators with the bypass permission may lift
    /// it) or `compliance` (no one may, until the date). Needs a bucket with Object Lock.
    #[arg(long, env = "CALLVAULT_RETENTION_MODE", requires = "retain_for", value_parser = ["governance", "compliance"])]
    pub retention_mode: Option<String>,
    /// How long each recording is locked, counted from its call's start: `7y`, `18mo`, `90d`.
    #[arg(long, env = "CALLVAULT_RETAIN_FOR", requires = "retention_mode")]
    pub retain_for: Option<String>,
}

/// The store a run writes recordings into, and how it writes them.
#[derive(Debug, Args, Clone)]
pub struct ArchiveStoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Object key template; placeholders {account} {companycode} {uuid} {ext} {yyyy} {mm} {dd} {hh} {filename}.
    #[arg(long, env = "CALLVAULT_KEY_TEMPLATE", default_value = crate::store::DEFAULT_TEMPLATE)]
    pub key_template: String,
    /// Multipart part size in MiB (S3 needs at least 5). A recording larger than a part
    /// holds two parts of the memory budget while it uploads.
    #[arg(long, env = "CALLVAULT_PART_SIZE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u16).range(5..=1024))]
    pub part_size_mib: u16,
    /// Upload buffers held at once by all transfers, in MiB: a recording smaller than a
    /// part takes its size, a larger one two parts. Peak memory is about 64 MiB plus this.
    #[arg(long, env = "CALLVAULT_MEMORY_BUDGET_MIB", default_value_t = 128, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub memory_budget_mib: u32,
    /// The S3 storage class of recordings and sidecars (STANDARD, STANDARD_IA, ONEZONE_IA,
    /// INTELLIGENT_TIERING, GLACIER_IR, REDUCED_REDUNDANCY); the bucket's default if unset.
    /// Server-side encryption comes from AWS_SERVER_SIDE_ENCRYPTION, AWS_SSE_KMS_KEY_ID and
    /// AWS_SSE_BUCKET_KEY_ENABLED.
    #[arg(long, env = "CALLVAULT_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// S3: send a checksum with every PUT, so the server checks the bytes and no HEAD
    /// follows a single PUT; `false` for a server that does not check checksums
    /// (every upload is then read back with a HEAD).
    #[arg(long, env = "CALLVAULT_STORE_CHECKSUMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub store_checksums: bool,
    /// S3: the checksum a single PUT carries, `crc64nvme` (cheap on both ends, over an
    /// unsigned payload) or `sha256` (the ledger's own hash, over a signed payload);
    /// multipart parts always carry CRC64NVME.
    #[arg(long, env = "CALLVAULT_STORE_CHECKSUM_ALGORITHM", default_value = "crc64nvme", value_parser = ["crc64nvme", "sha256"])]
    pub store_checksum_algorithm: String,
    #[command(flatten)]
    pub layout: LayoutArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// How one command reads the call-choosing flags: the environment variables behind them
/// (none by default: a choice of calls is made each time) and, where the command reads
/// them differently, their help.
pub trait Window: Clone + Debug + Send + Sync + 'static {
    const SINCE_ENV: Option<&'static str> = None;
    const UNTIL_ENV: Option<&'static str> = None;
    const COMPANY_ENV: Option<&'static str> = None;
    const SINCE_HELP: &'static str = "Calls that started at or after this: a date \
        (`2026-11-01`, in the provider's zone) or a time";
    const UNTIL_HELP: &'static str =
        "Calls that started before this (a date means up to the end of that day)";
}

/// `--since`/`--until`: when the calls started.
#[derive(Debug, Args, Clone)]
pub struct CallTimes<W: Window> {
    #[arg(long, env = W::SINCE_ENV, help = W::SINCE_HELP)]
    pub since: Option<String>,
    #[arg(long, env = W::UNTIL_ENV, help = W::UNTIL_HELP)]
    pub until: Option<String>,
    #[arg(skip)]
    window: PhantomData<W>,
}

/// `--company`: one company's calls.
#[derive(Debug, Args, Clone)]
pub struct CompanyArg<W: Window> {
    /// Only this company's calls.
    #[arg(long, env = W::COMPANY_ENV)]
    pub company: Option<String>,
    #[arg(skip)]
    window: PhantomData<W>,
}

/// `--company`, `--since` and `--until`: a slice of the calls.
#[derive(Debug, Args, Clone)]
pub struct CallSlice<W: Window> {
    #[command(flatten)]
    pub company: CompanyArg<W>,
    #[command(flatten)]
    pub times: CallTimes<W>,
}

/// Calls chosen on the command line each time (`find`, `hold`, `release`, `erase`,
/// `expire`): no environment variables.
#[derive(Debug, Clone)]
pub struct Chosen;
impl Window for Chosen {}

/// Which calls a find, a hold, a release or an erasure chooses (all the given conditions at
/// once): the ledger's one query.
#[derive(Debug, Args, Clone)]
pub struct CallSelection {
    /// A call by its uuid (repeat, or separate with commas).
    #[arg(long = "uuid", value_delimiter = ',')]
    pub uuid: Vec<String>,
    #[command(flatten)]
    pub slice: CallSlice<Chosen>,
    /// A phone number (caller, callee or the number shown), or its last digits:
    /// `--number 13692` finds `015029913692`. Only digits count (`+49 30 …` is `4930…`).
    /// `erase` asks for 7 digits or more.
    #[arg(long)]
    pub number: Option<String>,
    /// The extension (`extnumber`), exactly.
    #[arg(long)]
    pub extension: Option<String>,
}

/// Signing and time-stamping the Merkle log's checkpoints (see docs/compliance.md).
#[derive(Debug, Args, Clone, Default)]
pub struct ProofArgs {
    /// The operator's ed25519 key that signs each checkpoint (`callvault keys generate --out
    /// FILE`); a file others can read is refused. Without it checkpoints are written unsigned.
    #[arg(long, env = "CALLVAULT_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<std::path::PathBuf>,
    /// An RFC 3161 time-stamping authority that dates each checkpoint (repeat, or separate
    /// with commas, for several). One that is down never holds up archiving.
    #[arg(long = "tsa-url", env = "CALLVAULT_TSA_URL", value_delimiter = ',')]
    pub tsa_url: Vec<url::Url>,
    /// PEM certificates the authorities' chains must end in; a token that does not is refused.
    #[arg(long, env = "CALLVAULT_TSA_TRUST")]
    pub tsa_trust: Option<std::path::PathBuf>,
}

/// Who is asking, and why: recorded in the access log with every find, get and link.
#[derive(Debug, Args)]
pub struct RequesterArgs {
    /// Who is asking (default: the OS user).
    #[arg(long, env = "CALLVAULT_ACTOR")]
    pub actor: Option<String>,
    /// Why (a ticket, a complaint, a regulator's request): kept in the access log.
    #[arg(long)]
    pub reason: Option<String>,
}
