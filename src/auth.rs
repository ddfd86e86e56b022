//! API keys for mutations: configured as sha256 digests (never in plain text), presented in the
//! `x-api-key` header, each with the scopes it grants.

use sha2::{Digest, Sha256};

use crate::error::AppError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reload the model set (`reloadModels`).
    Models,
    /// Record ground-truth outcomes.
    Outcomes,
}

impl Scope {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "models" => Some(Self::Models),
            "outcomes" => Some(Self::Outcomes),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Models => "models",
            Self::Outcomes => "outcomes",
        }
    }
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<(String, Vec<Scope>)>,
}

/// Hex sha256 of a key, as configured in `API_KEYS` (`house-price-api hash-key` prints it).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Parses `API_KEYS` entries: `<sha256 hex>` (all scopes) or `<sha256 hex>:<scope>+<scope>`.
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (digest, scopes) = match entry.split_once(':') {
                Some((d, s)) => (d, s),
                None => (entry, "models+outcomes"),
            };
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!(
                    "API_KEYS entry {digest:.12}… is not a sha256 hex digest (use `house-price-api hash-key`)"
                );
            }
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| anyhow::anyhow!("unknown API key scope {s:?} (models, outcomes)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            keys.push((digest.to_ascii_lowercase(), scopes));
        }
        Ok(Self { keys })
    }

    /// Checks the presented key for `scope`. Returns the key's fingerprint (first 12 hex digits of
    /// its digest) for audit logs.
    pub fn authorize(&self, presented: Option<&str>, scope: Scope) -> Result<String, AppError> {
        if self.keys.is_empty() {
            return Err(AppError::Forbidden("mutations are disabled: no API keys are configured (API_KEYS)".into()));
        }
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return Err(AppError::Unauthenticated("this operation needs an API key in the x-api-key header".into()));
        };
        let digest = hash_key(key);
        let Some((_, scopes)) = self.keys.iter().find(|(d, _)| *d == digest) else {
            return Err(AppError::Unauthenticated("the API key is not valid".into()));
        };
        if !scopes.contains(&scope) {
            return Err(AppError::Forbidden(format!("the API key lacks the {:?} scope", scope.as_str())));
        }
        Ok(digest[..12].to_owned())
    }
}

/// The `x-api-key` a request presented, attached as request data.
#[derive(Debug, Clone, Default)]
pub struct PresentedKey(pub Option<String>);

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::parse(&[hash_key("admin-secret"), format!("{}:outcomes", hash_key("labeller"))]).unwrap()
    }

    #[test]
    fn a_valid_key_with_the_scope_is_authorized() {
        let actor = keys().authorize(Some("admin-secret"), Scope::Models).unwrap();
        assert_eq!(actor, hash_key("admin-secret")[..12]);
    }

    #[test]
    fn missing_or_unknown_keys_are_unauthenticated() {
        assert_eq!(keys().authorize(None, Scope::Models).unwrap_err().code(), "UNAUTHENTICATED");
        assert_eq!(keys().authorize(Some("guess"), Scope::Models).unwrap_err().code(), "UNAUTHENTICATED");
    }

    #[test]
    fn a_key_without_the_scope_is_forbidden() {
        assert_eq!(keys().authorize(Some("labeller"), Scope::Models).unwrap_err().code(), "FORBIDDEN");
        assert!(keys().authorize(Some("labeller"), Scope::Outcomes).is_ok());
    }

    #[test]
    fn no_configured_keys_forbid_everything() {
        assert_eq!(ApiKeys::default().authorize(Some("x"), Scope::Models).unwrap_err().code(), "FORBIDDEN");
    }

    #[test]
    fn malformed_entries_are_refused() {
        assert!(ApiKeys::parse(&["plain-text-key".into()]).is_err());
        assert!(ApiKeys::parse(&[format!("{}:admin", hash_key("k"))]).is_err());
    }
}
