//! The command line, read: the arguments parsed with the configuration file's settings as
//! their defaults, then turned into typed settings (`crate::config`). `cli`, `config` and
//! `config_file` meet here so that none of them needs another. The shared groups of flags
//! become their domain values in `groups`; what is left here is whole commands' settings.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::accounts::{AccountName, AccountTable};
use crate::archive::{RetryPolicy, RunOptions, Shutdown};
use crate::cli::{Cli, Command, ProofArgs, RunArgs};
use crate::config::{CommonSettings, ConfigError, hostname, provider_tz, s3_options};
use crate::config_file::{FileSettings, config_path};
use crate::ledger::Slice;
use crate::store::{S3Options, ShownS3};

/// A command line with the configuration file applied.
pub struct Invocation {
    pub cli: Cli,
    /// The configuration file's S3 settings (`[aws]`), under the environment's.
    pub file_aws: S3Options,
    /// The provider accounts the configuration file declares (`[accounts.<name>]`).
    pub file_accounts: Vec<(AccountName, AccountTable)>,
    /// The log filter this command runs with (see [`log_filter`]).
    pub log_filter: String,
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invocation")
            .field("cli", &self.cli)
            .field("file_aws", &ShownS3(&self.file_aws))
            .field("file_accounts", &self.file_accounts)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

/// Why the command line could not be taken.
#[derive(Debug)]
pub enum CliError {
    /// clap's own message (usage, `--help`, `--version`): print it and exit as clap says.
    Usage(clap::Error),
    /// The configuration file is unreadable or wrong.
    Config(ConfigError),
}

/// Parses `args` with the configuration file's settings (from `--config` or
/// `CALLVAULT_CONFIG`) as the arguments' defaults.
pub fn parse(args: Vec<OsString>) -> Result<Invocation, CliError> {
    let file = match config_path(&args) {
        Some(path) => FileSettings::load(&path).map_err(file_error)?,
        None => FileSettings::default(),
    };
    parse_with_file(file, args, std::env::var("RUST_LOG").ok())
}

/// Parses `args` with `file`'s settings as the arguments' defaults.
fn parse_with_file<I, T>(
    file: FileSettings,
    args: I,
    rust_log: Option<String>,
) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = file.apply(Cli::command()).map_err(file_error)?;
    let matches = command
        .try_get_matches_from(args)
        .map_err(CliError::Usage)?;
    let cli = Cli::from_arg_matches(&matches).map_err(CliError::Usage)?;
    let log_filter = log_filter(&cli, log_given(&matches, &cli), rust_log);
    Ok(Invocation {
        cli,
        file_aws: file.aws,
        file_accounts: file.accounts,
        log_filter,
    })
}

/// Whether `--log` was asked for (flag, CALLVAULT_LOG, or a configuration file's value
/// other than the default), rather than left at its default.
fn log_given(matches: &ArgMatches, cli: &Cli) -> bool {
    matches.value_source("log") != Some(ValueSource::DefaultValue) || cli.log != "info"
}

/// The log filter: `--log` when asked for, else RUST_LOG when set, else the command's own:
/// `warn` for `demo` (its story is on standard output) unless `--verbose`, `info` else.
fn log_filter(cli: &Cli, given: bool, rust_log: Option<String>) -> String {
    if given {
        return cli.log.clone();
    }
    if let Some(filter) = rust_log.filter(|f| !f.trim().is_empty()) {
        return filter;
    }
    match &cli.command {
        Command::Demo(demo) if !demo.verbose => "warn".into(),
        _ => cli.log.clone(),
    }
}

fn file_error(e: crate::config_file::FileError) -> CliError {
    CliError::Config(ConfigError(e.to_string()))
}

/// The global options, typed; the S3 settings merged with the `AWS_*` variables.
pub fn common_settings(
    cli: &Cli,
    file_aws: &[(String, String)],
    file_accounts: Vec<(AccountName, AccountTable)>,
) -> Result<CommonSettings, ConfigError> {
    Ok(CommonSettings {
        tz: provider_tz(&cli.provider_tz)?,
        ledger: cli.ledger.settings(),
        s3: s3_options(file_aws),
        accounts: file_accounts,
    })
}

/// The options of one pass, from the command line.
/// The deployment's signing key and time-stamping authorities, from `--signing-key-file`,
/// `--tsa-url` and `--tsa-trust`: a key file that cannot be read or that others can read is
/// a configuration error.
pub fn prover(args: &ProofArgs) -> Result<crate::proof::Prover, ConfigError> {
    Ok(crate::proof::Prover::new(signer(args)?).with_stamper(stamper(args)?))
}

/// The signing key `--signing-key-file` names, if any.
fn signer(args: &ProofArgs) -> Result<Option<crate::proof::keys::SigningKey>, ConfigError> {
    args.signing_key_file
        .as_deref()
        .map(crate::proof::keys::SigningKey::read_file)
        .transpose()
        .map_err(|e| ConfigError(e.to_string()))
}

/// The time-stamping authorities `--tsa-url` names, trusting `--tsa-trust`'s roots.
fn stamper(args: &ProofArgs) -> Result<Option<crate::proof::stamp::Stamper>, ConfigError> {
    if args.tsa_url.is_empty() {
        return Ok(None);
    }
    let roots = args
        .tsa_trust
        .as_deref()
        .map(crate::proof::tsa::TrustRoots::from_pem_file)
        .transpose()
        .map_err(|e| ConfigError(e.to_string()))?;
    let stamper = crate::proof::stamp::Stamper::new(args.tsa_url.clone(), roots)
        .map_err(|e| ConfigError(format!("the time-stamping client: {e}")))?;
    Ok(Some(stamper))
}

pub fn run_options(
    args: &RunArgs,
    store_description: &str,
    slice: Slice,
    shutdown: Shutdown,
) -> RunOptions {
    RunOptions {
        concurrency: usize::from(args.concurrency),
        max_records: args.max_records,
        deadline: args.deadline,
        dry_run: args.dry_run,
        lease: args.lease.max(Duration::from_secs(1)),
        retry: RetryPolicy {
            attempts_per_run: args.attempts_per_run,
            base_delay: args.retry_delay,
            give_up_answers: args.give_up_answers,
            give_up_window: args.give_up_window,
            ..RetryPolicy::default()
        },
        retention: chrono::Duration::days(i64::from(args.retention_days)),
        description: run_description(args, store_description),
        slice,
        grace: args.grace,
        shutdown,
        host: hostname(),
        progress: Default::default(),
        slots: None,
    }
}

/// What the runs table records of a run's settings.
fn run_description(args: &RunArgs, store_description: &str) -> serde_json::Value {
    let slice = &args.slice;
    serde_json::json!({
        "concurrency": args.concurrency,
        "max_records": args.max_records,
        "deadline": args.deadline.map(|d| humantime::format_duration(d).to_string()),
        "lease": humantime::format_duration(args.lease).to_string(),
        "key_template": args.store.key_template,
        "store": store_description,
        "sidecar": args.store.layout.sidecars(),
        "manifests_prefix": args.store.layout.manifests.manifests_prefix,
        "company": slice.company.company,
        "since": slice.times.since,
        "until": slice.times.until,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    /// Parses `args` with `file` as the configuration file.
    fn parse_with(file: &str, args: &[&str]) -> Result<Invocation, String> {
        let settings = FileSettings::parse(file).map_err(|e| e.to_string())?;
        parse_with_file(settings, args.iter().copied(), None).map_err(|e| match e {
            CliError::Usage(e) => e.to_string(),
            CliError::Config(e) => e.to_string(),
        })
    }

    #[test]
    fn file_values_fill_in_and_flags_win() {
        let file = "concurrency = 3\nstore = \"file:///tmp/x\"\ndry-run = true\n[aws]\nregion = \"eu-1\"\n";
        let parsed = parse_with(file, &["callvault", "run", "--concurrency", "5"]).unwrap();
        let Command::Run(run) = parsed.cli.command else {
            panic!("not run")
        };
        assert_eq!(run.concurrency, 5);
        assert_eq!(run.store.store.store.as_deref(), Some("file:///tmp/x"));
        assert!(run.dry_run);
        assert_eq!(
            parsed.file_aws,
            [("aws_region".to_owned(), "eu-1".to_owned())]
        );
    }

    #[test]
    fn a_global_setting_reaches_every_subcommand() {
        let parsed = parse_with("ledger = \"sqlite://f.db\"", &["callvault", "status"]).unwrap();
        assert_eq!(parsed.cli.ledger.location.expose(), "sqlite://f.db");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse_with("concurency = 3", &["callvault", "status"]).unwrap_err();
        assert!(err.contains("unknown setting `concurency`"), "{err}");
        let err = parse_with("[aws]\nbogus = 1", &["callvault", "status"]).unwrap_err();
        assert!(err.contains("aws.bogus"), "{err}");
        let err = parse_with("concurrency = \"many\"", &["callvault", "run"]).unwrap_err();
        assert!(err.contains("many"), "{err}");
        assert!(parse_with("config = \"x\"", &["callvault", "status"]).is_err());
    }

    #[test]
    fn the_layout_may_come_from_a_file_but_retrys_choice_may_not() {
        let parsed = parse_with(
            "sidecar = false\nmanifests-prefix = \"audit\"",
            &["callvault", "run"],
        )
        .unwrap();
        let Command::Run(run) = parsed.cli.command else {
            unreachable!()
        };
        assert!(!run.store.layout.sidecars());
        assert_eq!(run.store.layout.manifests.manifests_prefix, "audit");
        for choice in ["all = true", "uuid = [\"a\"]", "retry-error-code = \"x\""] {
            assert!(
                parse_with(choice, &["callvault", "retry"]).is_err(),
                "{choice}"
            );
        }
        assert!(
            parse_with("", &["callvault", "retry"]).is_err(),
            "a choice is required"
        );
        let parsed = parse_with("", &["callvault", "retry", "--error-code", "x"]).unwrap();
        let Command::Retry(retry) = parsed.cli.command else {
            unreachable!()
        };
        assert_eq!(retry.error_code.as_deref(), Some("x"));
    }

    #[test]
    fn a_runs_layout_reaches_its_store_config() {
        let parsed = parse_with(
            "sidecar = false\nmanifests-prefix = \"audit\"\nstore = \"memory:///x\"",
            &["callvault", "run", "--part-size-mib", "16"],
        )
        .unwrap();
        let Command::Run(run) = parsed.cli.command else {
            unreachable!()
        };
        let s3 = vec![("aws_region".to_owned(), "eu-1".to_owned())];
        let store = run.store.config(&s3).unwrap();
        assert_eq!(store.url, "memory:///x");
        assert_eq!(store.s3, s3);
        assert_eq!(store.part_size, 16 << 20);
        assert!(!store.sidecars);
        assert_eq!(store.manifests_prefix, "audit");
    }

    const PASSWORD: &str = "pg-pw-canary";
    const ACCESSKEY: &str = "accesskey-canary";
    const CALLBACK_SECRET: &str = "callback-secret-canary";
    const AWS_SECRET: &str = "aws-secret-canary";

    /// A `serve` (with a run's provider and store flags) on a PostgreSQL ledger with a
    /// password, every secret given: as flags, and in the file's `[aws]`.
    fn with_secrets() -> Invocation {
        let file = format!(
            "store = \"s3://bucket/calls\"\n[aws]\nsecret_access_key = \"{AWS_SECRET}\"\nregion = \"eu-1\"\n"
        );
        let ledger = format!("postgres://callvault:{PASSWORD}@db.example:5432/calls");
        parse_with(
            &file,
            &[
                "callvault",
                "--ledger",
                &ledger,
                "serve",
                "--accesskey",
                ACCESSKEY,
                "--callback-secret",
                CALLBACK_SECRET,
                "--api-url",
                "http://api.example/",
                "--appid",
                "app",
            ],
        )
        .unwrap()
    }

    fn assert_no_secret(shown: &str) {
        for secret in [PASSWORD, ACCESSKEY, CALLBACK_SECRET, AWS_SECRET] {
            assert!(!shown.contains(secret), "{secret:?} shown in {shown}");
        }
    }

    #[test]
    fn no_debug_of_the_parsed_settings_shows_a_password_or_a_secret() {
        let invocation = with_secrets();
        let common = common_settings(
            &invocation.cli,
            &invocation.file_aws,
            invocation.file_accounts.clone(),
        )
        .unwrap();
        let Command::Serve(serve) = &invocation.cli.command else {
            unreachable!()
        };
        let store = serve.run.store.config(&common.s3).unwrap();

        let shown = format!("{invocation:?}\n{common:?}\n{store:?}\n{serve:#?}");

        assert_no_secret(&shown);
        assert!(
            shown.contains("postgres://callvault:***@db.example:5432/calls"),
            "the ledger is shown, its password hidden: {shown}"
        );
        assert!(
            shown.contains("eu-1"),
            "plain S3 settings are shown: {shown}"
        );
        // The secrets themselves reach what needs them, whole.
        assert!(common.ledger.location.expose().contains(PASSWORD));
        assert!(store.s3.iter().any(|(_, v)| v == AWS_SECRET));
        let provider = serve.run.provider.config(common.tz).unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&provider.accesskey),
            ACCESSKEY
        );
    }

    #[test]
    fn a_password_in_a_query_parameter_is_hidden_too() {
        let shown = crate::config::LedgerLocation::new(&format!(
            "postgres://db.example/calls?user=u&password={PASSWORD}&sslmode=require"
        ))
        .to_string();
        assert_no_secret(&shown);
        assert!(shown.contains("sslmode=require"), "{shown}");
        let sqlite = crate::config::LedgerLocation::new("sqlite:///var/lib/ledger.db");
        assert_eq!(sqlite.to_string(), "sqlite:///var/lib/ledger.db");
    }

    /// `--log` (or CALLVAULT_LOG) first, then RUST_LOG, then the command's own: `demo`
    /// tells its story with warnings only unless `--verbose`.
    #[test]
    fn the_log_filter_is_asked_for_or_the_commands_own() {
        let filter = |args: &[&str], rust_log: Option<&str>| {
            let file = FileSettings::parse("").unwrap();
            parse_with_file(file, args.iter().copied(), rust_log.map(str::to_owned))
                .unwrap()
                .log_filter
        };
        assert_eq!(filter(&["callvault", "demo"], None), "warn");
        assert_eq!(filter(&["callvault", "demo", "--verbose"], None), "info");
        assert_eq!(filter(&["callvault", "demo"], Some("debug")), "debug");
        assert_eq!(
            filter(&["callvault", "--log", "trace", "demo"], Some("debug")),
            "trace"
        );
        assert_eq!(filter(&["callvault", "status"], None), "info");
        assert_eq!(
            filter(&["callvault", "status"], Some("callvault=debug")),
            "callvault=debug"
        );
    }
}
