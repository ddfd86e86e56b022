//! Who is calling and what they may do.
//!
//! A caller is identified by the `x-api-key` it presents (over WebSocket: the header of the
//! upgrade request, or `x-api-key` in the `connection_init` payload, since browsers cannot set
//! WebSocket headers). Keys live in PostgreSQL ([`keys`]: `house-price-api keys create|list|
//! revoke|rotate`), plus the bootstrap keys of `API_KEYS` (sha256 digests). Each key grants
//! [`Scope`]s; [`Access`] (`ACCESS=open|keys`) says whether reads need one at all.
//!
//! | scope | operations |
//! |---|---|
//! | `predict` | `predictPrice`, `predictPrices`, `POST /prever_precos/` |
//! | `history` | `predictions`, `prediction`, subscription `predictionLogged` |
//! | `monitoring` | `performance`, `drift`, `traffic`, `shadowComparison`, `driftHistory`, `driftReports`, `modelEvents`, subscription `driftAlert` |
//! | `outcomes` | `recordOutcome`, `recordOutcomes` (always, whatever `ACCESS` says) |
//! | `models` | `reloadModels` (always) |
//!
//! `model` and `models` (the model metadata) need any valid key under `ACCESS=keys`.

pub mod keys;

use std::sync::Arc;

use crate::error::AppError;

pub use keys::{KeyStore, hash_key};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Price houses (GraphQL and REST).
    Predict,
    /// Read the prediction log.
    History,
    /// Read monitoring: traffic, accuracy, drift, shadow comparison, model events.
    Monitoring,
    /// Record ground-truth outcomes.
    Outcomes,
    /// Reload the model set (`reloadModels`).
    Models,
}

impl Scope {
    /// Every scope, in documentation order.
    pub const ALL: [Self; 5] = [Self::Predict, Self::History, Self::Monitoring, Self::Outcomes, Self::Models];

    /// The scope named `s` (as stored in `api_keys.scopes` and given to `keys create`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predict => "predict",
            Self::History => "history",
            Self::Monitoring => "monitoring",
            Self::Outcomes => "outcomes",
            Self::Models => "models",
        }
    }

    /// Whether `ACCESS=open` lets a caller without a key do this (reads and predictions; never
    /// the operator actions).
    fn open_to_anonymous(self) -> bool {
        matches!(self, Self::Predict | Self::History | Self::Monitoring)
    }

    /// Parses a `+`- or `,`-separated list of scope names.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Self>> {
        let mut scopes = Vec::new();
        for name in list.split(['+', ',']).map(str::trim).filter(|s| !s.is_empty()) {
            let scope = Self::parse(name).ok_or_else(|| {
                anyhow::anyhow!("unknown API key scope {name:?} (one of {})", Self::ALL.map(Self::as_str).join(", "))
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            anyhow::bail!("a key needs at least one scope");
        }
        Ok(scopes)
    }
}

/// `ACCESS`: whether reads and predictions need a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Access {
    /// Predictions, history, monitoring and model metadata are open to anyone who reaches the
    /// port; outcomes and reloads need a key. For local use and the seed's clients.
    #[default]
    Open,
    /// Every operation needs a key with its scope (introspection follows `INTROSPECTION`).
    Keys,
}

/// A key that was accepted: its id and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// `api_keys.id`, or `env:<12 hex digits of the digest>` for a key from `API_KEYS`; stored in
    /// `prediction_log.api_key_id`.
    pub id: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Who is calling, as the HTTP layer found out once per request (or per WebSocket connection).
#[derive(Debug, Clone, Default)]
pub enum Caller {
    /// No key presented.
    #[default]
    Anonymous,
    /// A valid key.
    Key(Arc<KeyIdentity>),
    /// A key was presented but is unknown, expired or revoked (the message says which).
    Refused(String),
}

impl Caller {
    /// The accepted key's id, for the log rows.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::Key(key) => Some(&key.id),
            _ => None,
        }
    }

    /// Checks that this caller may do what `scope` covers (`None`: read model metadata, which any
    /// key may) under `access`. `no_keys_exist` turns "present a key" into "there are no keys to
    /// present" for operations that always need one. Returns the accepted key's id, if any.
    pub fn require(&self, access: Access, scope: Option<Scope>, no_keys_exist: bool) -> Result<Option<&str>, AppError> {
        let needs_key = match (access, scope) {
            (Access::Open, None) => false,
            (Access::Open, Some(scope)) => !scope.open_to_anonymous(),
            (Access::Keys, _) => true,
        };
        let what = scope.map_or_else(|| "any scope".to_owned(), |s| format!("the {:?} scope", s.as_str()));
        if needs_key && no_keys_exist {
            return Err(AppError::Forbidden(
                "this operation needs an API key and none exist: create one with `house-price-api keys create`".into(),
            ));
        }
        match self {
            Self::Refused(message) => Err(AppError::Unauthenticated(message.clone())),
            // Under open access a key does not take away what needs none.
            Self::Key(key) => match scope {
                Some(scope) if needs_key && !key.scopes.contains(&scope) => {
                    Err(AppError::Forbidden(format!("the API key lacks {what}")))
                }
                _ => Ok(Some(&key.id)),
            },
            Self::Anonymous if !needs_key => Ok(None),
            Self::Anonymous => Err(AppError::Unauthenticated(format!(
                "this operation needs an API key with {what} in the x-api-key header"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scopes: &[Scope]) -> Caller {
        Caller::Key(Arc::new(KeyIdentity { id: "0123456789ab".into(), scopes: scopes.to_vec() }))
    }

    #[test]
    fn open_access_lets_anonymous_callers_read_and_predict_but_not_act() {
        for scope in [Scope::Predict, Scope::History, Scope::Monitoring] {
            assert_eq!(Caller::Anonymous.require(Access::Open, Some(scope), false).unwrap(), None);
        }
        assert!(Caller::Anonymous.require(Access::Open, None, false).is_ok());
        for scope in [Scope::Outcomes, Scope::Models] {
            let err = Caller::Anonymous.require(Access::Open, Some(scope), false).unwrap_err();
            assert_eq!(err.code(), "UNAUTHENTICATED");
            assert_eq!(Caller::Anonymous.require(Access::Open, Some(scope), true).unwrap_err().code(), "FORBIDDEN");
            let wrong = Caller::Refused("the API key is not valid".into());
            assert_eq!(wrong.require(Access::Open, Some(scope), true).unwrap_err().code(), "FORBIDDEN");
        }
    }

    #[test]
    fn keys_access_needs_a_key_with_the_scope_for_everything() {
        for scope in Scope::ALL.map(Some).into_iter().chain([None]) {
            assert_eq!(Caller::Anonymous.require(Access::Keys, scope, false).unwrap_err().code(), "UNAUTHENTICATED");
        }
        let predictor = key(&[Scope::Predict]);
        assert_eq!(predictor.require(Access::Keys, Some(Scope::Predict), false).unwrap(), Some("0123456789ab"));
        assert!(predictor.require(Access::Keys, None, false).is_ok(), "model metadata: any key");
        let err = predictor.require(Access::Keys, Some(Scope::History), false).unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN");
        assert!(err.to_string().contains("\"history\""), "{err}");
        // Under open access, a key's scopes add to what needs none.
        assert_eq!(predictor.require(Access::Open, Some(Scope::Models), false).unwrap_err().code(), "FORBIDDEN");
        let labeller = key(&[Scope::Outcomes]);
        assert_eq!(labeller.require(Access::Open, Some(Scope::Predict), false).unwrap(), Some("0123456789ab"));
    }

    #[test]
    fn a_refused_key_is_unauthenticated_even_where_none_is_needed() {
        let refused = Caller::Refused("the API key has expired".into());
        let err = refused.require(Access::Open, Some(Scope::Predict), false).unwrap_err();
        assert_eq!((err.code(), err.to_string().as_str()), ("UNAUTHENTICATED", "the API key has expired"));
    }

    #[test]
    fn scope_lists_parse_and_refuse_unknown_names() {
        assert_eq!(Scope::parse_list("predict+history").unwrap(), [Scope::Predict, Scope::History]);
        assert_eq!(Scope::parse_list("models, outcomes,models").unwrap(), [Scope::Models, Scope::Outcomes]);
        assert!(Scope::parse_list("admin").unwrap_err().to_string().contains("admin"));
        assert!(Scope::parse_list("").is_err());
    }
}
