//! The provider token, shared by every worker: refreshed before its 12 hours run out, and
//! renewed by exactly one login however many workers see the same token rejected at once
//! (single flight: the login lock is taken, then the generation checked again).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::{Mutex, RwLock};

use super::error::ProviderError;

/// A token as handed to a request, with the generation to name when it is rejected.
#[derive(Clone)]
pub struct Token {
    pub secret: SecretString,
    pub generation: u64,
}

struct Cached {
    secret: SecretString,
    generation: u64,
    obtained: Instant,
}

pub struct TokenCache {
    current: RwLock<Option<Cached>>,
    login_lock: Mutex<()>,
    /// Refresh once a token is this old (the provider's 12 h less a margin).
    max_age: Duration,
    /// The newest generation the provider accepted at least once (0: none yet).
    accepted: AtomicU64,
}

impl TokenCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            current: RwLock::new(None),
            login_lock: Mutex::new(()),
            max_age,
            accepted: AtomicU64::new(0),
        }
    }

    /// Notes that the provider accepted a request made with the token of `generation`.
    pub fn accepted(&self, generation: u64) {
        self.accepted.fetch_max(generation, Ordering::Relaxed);
    }

    /// Whether the provider accepted the token of `generation` (or a newer one): then its
    /// rejection is churn (another login, an invalidation), not a provider refusing our
    /// tokens.
    pub fn was_accepted(&self, generation: u64) -> bool {
        self.accepted.load(Ordering::Relaxed) >= generation
    }

    /// The current token, logging in first when there is none or it is about to expire.
    pub async fn get<F, Fut>(&self, login: F) -> Result<Token, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, ProviderError>>,
    {
        if let Some(token) = self.fresh(None).await {
            return Ok(token);
        }
        self.renew(None, login).await
    }

    /// Replaces the token of generation `rejected`, unless another worker already did.
    pub async fn replace<F, Fut>(&self, rejected: u64, login: F) -> Result<Token, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, ProviderError>>,
    {
        self.renew(Some(rejected), login).await
    }

    async fn renew<F, Fut>(&self, rejected: Option<u64>, login: F) -> Result<Token, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, ProviderError>>,
    {
        let _single_flight = self.login_lock.lock().await;
        // Someone may have logged in while we waited for the lock.
        if let Some(token) = self.fresh(rejected).await {
            return Ok(token);
        }
        let secret = login().await?;
        let mut current = self.current.write().await;
        let generation = current.as_ref().map_or(1, |c| c.generation + 1);
        *current = Some(Cached {
            secret: secret.clone(),
            generation,
            obtained: Instant::now(),
        });
        Ok(Token { secret, generation })
    }

    /// The cached token if it is young enough and is not the `rejected` generation.
    async fn fresh(&self, rejected: Option<u64>) -> Option<Token> {
        let current = self.current.read().await;
        current
            .as_ref()
            .filter(|c| c.obtained.elapsed() < self.max_age && Some(c.generation) != rejected)
            .map(|c| Token {
                secret: c.secret.clone(),
                generation: c.generation,
            })
    }

    /// Forgets the token (after a logout).
    pub async fn clear(&self) {
        *self.current.write().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn many_workers_rejecting_one_token_cause_one_login() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(3600)));
        let logins = Arc::new(AtomicU32::new(0));
        let login = |logins: Arc<AtomicU32>| async move {
            let n = logins.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(SecretString::from(format!("token-{n}")))
        };
        let first = cache.get(|| login(logins.clone())).await.unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, logins) = (cache.clone(), logins.clone());
                tokio::spawn(async move {
                    cache
                        .replace(first.generation, || login(logins))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            let token = t.await.unwrap();
            assert_eq!(token.secret.expose_secret(), "token-2");
            assert_eq!(token.generation, 2);
        }
        assert_eq!(logins.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_generation_counts_as_accepted_once_it_or_a_newer_one_was() {
        let cache = TokenCache::new(Duration::from_secs(3600));
        assert!(!cache.was_accepted(1));

        cache.accepted(2);
        cache.accepted(1);

        assert!(cache.was_accepted(1) && cache.was_accepted(2));
        assert!(!cache.was_accepted(3));
    }

    #[tokio::test]
    async fn an_old_token_is_refreshed_before_use() {
        let cache = TokenCache::new(Duration::ZERO);
        let a = cache
            .get(|| async { Ok(SecretString::from("a")) })
            .await
            .unwrap();
        let b = cache
            .get(|| async { Ok(SecretString::from("b")) })
            .await
            .unwrap();
        assert_eq!((a.generation, b.secret.expose_secret()), (1, "b"));
    }
}
