//! `callvault export verify BUNDLE [--log-key FILE] [--tsa-roots FILE] [--json]`: reads the
//! trust the recipient was given, checks the bundle, prints the report (one line a problem,
//! or JSON) and says by its exit code whether the bundle holds: 0 clean, 1 any problem,
//! 2 the bundle or a trust file cannot be read.

use std::path::Path;

use crate::export::verify::{Trust, TrustSource, VerifyReport, verify_bundle};
use crate::proof::keys::VerifierKey;
use crate::proof::tsa::TrustRoots;

const EXIT_CLEAN: i32 = 0;
const EXIT_PROBLEMS: i32 = 1;
const EXIT_USAGE: i32 = 2;

/// Checks `bundle`; the exit code. Usage errors (a missing bundle or trust file) are
/// printed to stderr and give 2.
pub async fn run(
    bundle: &Path,
    tsa_roots: Option<&Path>,
    log_key: Option<&Path>,
    json: bool,
) -> anyhow::Result<i32> {
    let trust = match read_trust(tsa_roots, log_key) {
        Ok(trust) => trust,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(EXIT_USAGE);
        }
    };
    let report = match verify_bundle(bundle, &trust).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(if report.is_clean() {
        EXIT_CLEAN
    } else {
        EXIT_PROBLEMS
    })
}

fn read_trust(tsa_roots: Option<&Path>, log_key: Option<&Path>) -> Result<Trust, String> {
    let log_keys = match log_key {
        Some(path) => Some(VerifierKey::read_file(path).map_err(|e| {
            format!("--log-key: {e} (give the operator's public key file, NAME.pub)")
        })?),
        None => None,
    };
    let tsa_roots = match tsa_roots {
        Some(path) => {
            Some(TrustRoots::from_pem_file(path).map_err(|e| format!("--tsa-roots: {e}"))?)
        }
        None => None,
    };
    Ok(Trust {
        log_keys,
        tsa_roots,
    })
}

fn source(source: TrustSource) -> &'static str {
    match source {
        TrustSource::Given => "given",
        TrustSource::BundleKeys => {
            "taken from the bundle (keys/): this shows the bundle is intact, not who made it"
        }
        TrustSource::BundleCertificates => {
            "taken from the bundle (tsa/certificates.pem): this shows the tokens are intact, not who made them"
        }
    }
}

/// The human report: what was checked, where trust came from, one line a problem.
pub fn summary(report: &VerifyReport) -> String {
    let c = &report.checked;
    let mut out = format!(
        "bundle {}\n  log key: {}\n  TSA roots: {}\n  checked: {} files, {} calls, {} recordings, {} leaves, {} checkpoints, {} tokens, {} consistency proofs\n",
        report.bundle,
        source(report.trust.log_key),
        source(report.trust.tsa_roots),
        c.files,
        c.calls,
        c.recordings,
        c.leaves,
        c.checkpoints,
        c.tokens,
        c.consistency_proofs
    );
    if report.is_clean() {
        out.push_str("OK: every check holds\n");
    } else {
        out.push_str(&format!("{} problems:\n", report.problems.len()));
        for problem in &report.problems {
            out.push_str(&format!("  {problem}\n"));
        }
    }
    out
}
