//! What can go wrong talking to the provider, sorted by what the caller must do about it.
//!
//! Every failure maps to one [`Action`] of the crate's one classification (`crate::failure`):
//! refused credentials stop the run, a rejected token asks for a re-login, answers that say
//! the recording cannot be had give up (once they repeat), anything else is retried.

pub use crate::failure::Action;

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

    /// Whether the provider's API could not be reached at all (refused or timed out).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transient { code, .. } if code == "provider_connect" || code == "provider_timeout")
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
