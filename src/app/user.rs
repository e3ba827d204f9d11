//! `callvault user add NAME`: writes a web page user to the users file. The password comes
//! from standard input (a pipe, a secret manager) or a no-echo prompt on a terminal, never
//! from the command line, where other users and shell histories would see it.

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use super::EXIT_OK;
use crate::cli::UserAddArgs;
use crate::config::ConfigError;
use crate::ui::{UserName, UsersError, UsersFile};

pub fn add(args: &UserAddArgs) -> anyhow::Result<u8> {
    let name = UserName::parse(&args.name).map_err(|e| ConfigError(e.to_string()))?;
    let password = read_password(&name)?;
    let users = UsersFile::new(&args.users_file);
    match users.add(&name, &password) {
        Ok(replaced) => {
            let what = if replaced {
                "new password for"
            } else {
                "added"
            };
            println!("{what} {name} in {}", users.path().display());
            Ok(EXIT_OK)
        }
        Err(
            e @ (UsersError::ShortPassword | UsersError::BadName(_) | UsersError::BadLine { .. }),
        ) => Err(ConfigError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

fn read_password(name: &UserName) -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))
            .context("reading the password")?;
        let again = rpassword::prompt_password("Once more: ").context("reading the password")?;
        if first != again {
            return Err(ConfigError("the two passwords differ; nothing was written".into()).into());
        }
        return Ok(SecretString::from(first));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned());
    if password.expose_secret().is_empty() {
        return Err(ConfigError(
            "no password on standard input: pipe one line, or run on a terminal to be asked".into(),
        )
        .into());
    }
    Ok(password)
}
