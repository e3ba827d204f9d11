//! `callvault keys generate`: the operator's signing key for checkpoints.

use crate::cli::KeysGenerateArgs;
use crate::config::ConfigError;
use crate::proof::keys::SigningKey;

pub fn generate(args: &KeysGenerateArgs) -> anyhow::Result<u8> {
    let key = SigningKey::generate(&args.name).map_err(|e| ConfigError(e.to_string()))?;
    let public = key
        .write_new(&args.out)
        .map_err(|e| ConfigError(e.to_string()))?;
    println!(
        "signing key {} written to {} (keep it secret, mode 0600); public key {} written to {}: \
         give it to whoever checks your checkpoints and exports",
        key.name(),
        args.out.display(),
        key.verifier().to_text(),
        public.display()
    );
    Ok(super::EXIT_OK)
}
