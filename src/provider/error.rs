//! What can go wrong talking to the provider, sorted by what the caller must do about it.
//!
//! Policy: every failure is one of four actions. Re-login is handled inside the client (a
//! caller only sees it when logging in again did not help); stop-the-run is for credentials,
//! which no retry can fix and which must not mark any record failed; retry is for anything
//! passing; give-up is for answers that say the recording cannot be had.

/// The action a failure asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Log in again and repeat the request.
    Relogin,
    /// Stop the whole run: the provider refuses our credentials (exit code 3).
    StopRun,
    /// Try again later (backoff, then a later run).
    Retry,
    /// The recording cannot be had: settle the record as failed (or expired).
    GiveUp,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// `ret` 600 or `data.errors.code` 1010.
    #[error("the provider rejected the token ({detail})")]
    TokenRejected { detail: String },
    /// `ret` 601–604, or a login the provider refused.
    #[error("the provider refused the credentials: {detail}")]
    CredentialsRefused { detail: String },
    /// Timeouts, connection errors, HTTP 5xx, `ret` 500, code 1001, unreadable answers.
    #[error("the provider is not answering properly: {detail}")]
    Transient { code: String, detail: String },
    /// The provider says the recording file does not exist.
    #[error("the provider has no such recording: {detail}")]
    FileNotFound { code: String, detail: String },
    /// The provider calls the request illegal (`ret` 400): an illegal file name, typically.
    #[error("the provider rejected the request as illegal: {detail}")]
    Rejected { code: String, detail: String },
    /// An answer callvault has no rule for; treated as passing, but counted.
    #[error("unexpected answer from the provider: {detail}")]
    Unexpected { code: String, detail: String },
}

impl ProviderError {
    pub fn action(&self) -> Action {
        match self {
            Self::TokenRejected { .. } => Action::Relogin,
            Self::CredentialsRefused { .. } => Action::StopRun,
            Self::Transient { .. } | Self::Unexpected { .. } => Action::Retry,
            Self::FileNotFound { .. } | Self::Rejected { .. } => Action::GiveUp,
        }
    }

    /// A short stable code for the ledger's `error_code` columns.
    pub fn code(&self) -> String {
        match self {
            Self::TokenRejected { .. } => "provider_token_rejected".into(),
            Self::CredentialsRefused { .. } => "provider_credentials_refused".into(),
            Self::Transient { code, .. }
            | Self::FileNotFound { code, .. }
            | Self::Rejected { code, .. }
            | Self::Unexpected { code, .. } => code.clone(),
        }
    }

    /// Describes a transport failure without the request URL (which may carry secrets).
    pub(crate) fn from_transport(err: reqwest::Error, doing: &str) -> Self {
        let code = if err.is_timeout() {
            "provider_timeout"
        } else if err.is_connect() {
            "provider_connect"
        } else {
            "provider_transport"
        };
        Self::Transient {
            code: code.into(),
            detail: format!("{doing}: {}", describe_transport(err)),
        }
    }
}

/// The chain of a reqwest error, without its URL.
pub(crate) fn describe_transport(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
