//! `README.txt`: what the bundle is and how its recipient checks it, in plain language, with
//! common tools (`sha256sum`, `openssl`) as well as with callvault.

use super::format::BundleInfo;
use crate::proof::keys::SigningKey;

/// What the bundle proves and what it does not, for `bundle.json`'s notes.
pub fn trust_notes(signed: bool) -> Vec<String> {
    let mut notes = vec![
        "Each call's manifest lines are proved to be in a checkpoint of the archive's Merkle log (RFC 9162 inclusion proofs); the checkpoints are proved to be prefixes of the newest one (consistency proofs).".to_owned(),
        "Who wrote a checkpoint is shown by its signature, checked against the operator's public key obtained from the operator, not the copy in keys/; when it was written is shown by its RFC 3161 time-stamp tokens, checked against the time-stamping authority's root certificate obtained from the authority.".to_owned(),
        "The call records, retention and holds are the archive's statements; the log proves the manifest lines (account, uuid, key, size, SHA-256).".to_owned(),
    ];
    if !signed {
        notes.push(
            "SHA256SUMS is not signed: it shows the files are intact, not who made the bundle."
                .to_owned(),
        );
    }
    notes
}

/// The README for `info`.
pub fn text(info: &BundleInfo, signer: Option<&SigningKey>) -> String {
    let signed = match signer {
        Some(key) => format!(
            "SHA256SUMS.sig is the operator's ed25519 signature of SHA256SUMS, made with the\n\
             key {} (keys/{}). Check it with the operator's public key in PEM form, obtained\n\
             from the operator (keys/ holds copies, for reading only):\n\n\
             \x20   openssl pkeyutl -verify -pubin -inkey OPERATOR.pem -rawin \\\n\
             \x20       -in SHA256SUMS -sigfile SHA256SUMS.sig\n",
            key.name(),
            key.verifier().file_name()
        ),
        None => "SHA256SUMS is not signed: checking it shows that the files are intact, not who\n\
                 made the bundle. The checkpoints' signatures and time-stamps below say that.\n"
            .to_owned(),
    };
    format!(
        "callvault export bundle ({format})\n\
         ==========================================\n\n\
         Made {created} by {actor}, with callvault {version}.\n\
         Reason given: {reason}\n\
         Calls: {calls}, of the account(s): {accounts}.\n\n\
         WHAT THIS IS\n\n\
         Call recordings kept by callvault, with the evidence that they are complete and\n\
         unaltered since they were archived. Every archived recording (and every erasure) is\n\
         one line of a manifest, and every manifest line is a leaf of an append-only Merkle\n\
         log (RFC 6962/9162). After each manifest the archive writes a checkpoint: the log's\n\
         size and root hash, signed with the operator's key and dated by one or more\n\
         time-stamping authorities (RFC 3161). A line's inclusion proof shows it is in a\n\
         checkpoint; a consistency proof shows an older checkpoint is a prefix of a newer one,\n\
         so nothing was removed or rewritten in between.\n\n\
         THE FILES\n\n\
         bundle.json              this export: who, when, why, which calls (the choice made)\n\
         calls.jsonl              one line per call: its record, the stored object (key,\n\
         \x20                        version, size, SHA-256, retention and legal hold as the\n\
         \x20                        store reported them at export), its manifest line(s) and\n\
         \x20                        their inclusion proofs\n\
         checkpoints/ACCOUNT/     the checkpoints concerned, byte for byte as in the archive,\n\
         \x20                        and their time-stamp tokens (*.tsr)\n\
         consistency.jsonl        a consistency proof from each checkpoint to the newest\n\
         keys/                    the public keys that signed the checkpoints (.pub, and .pem\n\
         \x20                        for openssl); copies: trust the key the operator gave you\n\
         tsa/certificates.pem     the certificates the tokens carry (copies), when they do\n\
         audit/access.jsonl       who looked at, copied or exported these calls, when, why\n\
         audit/holds.jsonl        legal holds placed on and released from these calls\n\
         audit/erasures.jsonl     erasures of these calls: when, why, by whom\n\
         audit/verifications.jsonl  when each call's recording was last read back and checked\n\
         completeness.jsonl       for the calls' days: the provider's list against the archive\n\
         object-lock.json         the bucket's Object Lock configuration, as read at export\n\
         recordings/              the recordings (when exported with them)\n\
         calls.dat                a Concordance load file for review tools (when asked for)\n\
         SHA256SUMS               the SHA-256 of every file above\n\n\
         HOW TO CHECK IT\n\n\
         1. Every file is intact:\n\n\
         \x20   sha256sum -c SHA256SUMS\n\n\
         2. {signed}\n\
         3. Each checkpoint was dated by a time-stamping authority (ROOTS.pem: the\n\
         \x20  authority's root certificate, obtained from the authority):\n\n\
         \x20   for t in checkpoints/*/*.tsr; do\n\
         \x20     openssl ts -verify -data \"${{t%.tsr}}\" -in \"$t\" -CAfile ROOTS.pem\n\
         \x20   done\n\n\
         \x20  (for a token named NAME.checkpoint.LABEL.tsr, -data is NAME.checkpoint)\n\n\
         4. Everything at once, the Merkle proofs and checkpoint signatures included:\n\n\
         \x20   callvault export verify BUNDLE --log-key OPERATOR.pub --tsa-roots ROOTS.pem\n\n\
         The format is specified in callvault's docs/proof-format.md, so that the Merkle\n\
         proofs can be checked with a few lines of code and no callvault.\n\n\
         WHAT IT DOES NOT SHOW\n\n\
         The call records, retention dates and holds are what the archive says; the log\n\
         proves each call's manifest line (account, uuid, object key, size, SHA-256), and\n\
         so each recording's bytes.\n",
        format = info.format,
        created = info.created_at,
        actor = info.actor,
        version = info.callvault_version,
        reason = info.reason,
        calls = info.calls,
        accounts = info.accounts.join(", "),
    )
}
