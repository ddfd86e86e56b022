//! API keys: the `api_keys` table (SQL here and nowhere else), the `keys` subcommands, and the
//! in-memory copy every replica checks requests against.
//!
//! A key is `hpk_<id>_<secret>`: a public id of 12 hex digits (6 random bytes, the row's primary
//! key and what the log rows store) and a secret of 64 hex digits (32 random bytes). Only the
//! secret's SHA-256 is stored. A fast hash is the right one here: slow password hashes (argon2,
//! bcrypt) exist to make guessing *low-entropy* passwords expensive, and a 256-bit random secret
//! cannot be guessed however fast the hash is; SHA-256 keeps the check at a microsecond on every
//! request and still leaves a stolen table useless.
//!
//! Every replica keeps the table in memory ([`KeyStore`]) and polls `count(*)`/`max(updated_at)`
//! every `KEY_REFRESH_MS` (default 1 s), re-reading the table when either changed: a key created,
//! revoked or rotated on one replica (or with the CLI) takes effect on every replica within about
//! that period. Expiry is checked against the clock at each request. Uses are remembered in memory
//! and written to `last_used_at` at the same period, so a request never waits for a write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{KeyIdentity, Scope};
use crate::config::KeysAction;

/// The text every key starts with.
pub const KEY_PREFIX: &str = "hpk_";

/// Hex sha256 of a key, as configured in `API_KEYS` (`house-price-api hash-key` prints it).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key as `keys list` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct KeyRecord {
    /// Public id.
    pub id: String,
    /// Who or what it is for.
    pub name: String,
    /// Scope names.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last accepted use (within about `KEY_REFRESH_MS`).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key it replaced.
    pub rotated_from: Option<String>,
}

impl KeyRecord {
    /// `active`, `revoked` or `expired` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A key just created: the only time its text exists outside the client.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The stored key.
    pub record: KeyRecord,
    /// `hpk_<id>_<secret>`: give it to the client; it cannot be shown again.
    pub key: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// Splits `hpk_<id>_<secret>` into its id and secret.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The `SELECT` of [`KeyRecord`]s.
macro_rules! select_keys {
    () => {
        "SELECT id, name, scopes, created_at, expires_at, revoked_at, last_used_at, rotated_from FROM api_keys"
    };
}

/// Creates a key named `name` with `scopes`, valid until `expires_at` (never if `None`).
pub async fn create(
    pool: &PgPool,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<DateTime<Utc>>,
) -> anyhow::Result<IssuedKey> {
    insert(pool, name, scopes, expires_at, None).await
}

async fn insert<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<DateTime<Utc>>,
    rotated_from: Option<&str>,
) -> anyhow::Result<IssuedKey> {
    let (id, secret) = (random_hex(6), random_hex(32));
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let record = sqlx::query_as::<_, KeyRecord>(
        "INSERT INTO api_keys (id, name, secret_sha256, scopes, expires_at, rotated_from) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, name, scopes, created_at, expires_at, revoked_at, last_used_at, rotated_from",
    )
    .bind(&id)
    .bind(name)
    .bind(secret_digest(&secret).as_slice())
    .bind(&scopes)
    .bind(expires_at)
    .bind(rotated_from)
    .fetch_one(conn)
    .await?;
    Ok(IssuedKey { key: format!("{KEY_PREFIX}{id}_{secret}"), record })
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<KeyRecord>> {
    sqlx::query_as::<_, KeyRecord>(concat!(select_keys!(), " ORDER BY created_at DESC, id")).fetch_all(pool).await
}

/// Revokes key `id` now. `false` if there is no such key or it was already revoked.
pub async fn revoke(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now(), updated_at = clock_timestamp() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces key `id` with a new key of the same name and scopes (and the same lifetime, counted
/// from now); the old key keeps working for `grace` (and no longer than it would have), so clients
/// can switch over without an outage.
pub async fn rotate(pool: &PgPool, id: &str, grace: Duration) -> anyhow::Result<IssuedKey> {
    let mut tx = pool.begin().await?;
    let old = sqlx::query_as::<_, KeyRecord>(concat!(select_keys!(), " WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no API key with id {id:?}"))?;
    let now = Utc::now();
    if old.state(now) != "active" {
        anyhow::bail!("API key {id} is {}: create a new key instead", old.state(now));
    }
    let scopes = old.scopes.iter().filter_map(|s| Scope::parse(s)).collect::<Vec<_>>();
    let expires_at = old.expires_at.map(|at| now + (at - old.created_at));
    let issued = insert(&mut *tx, &old.name, &scopes, expires_at, Some(id)).await?;
    let until = chrono::TimeDelta::from_std(grace)
        .ok()
        .and_then(|grace| now.checked_add_signed(grace))
        .ok_or_else(|| anyhow::anyhow!("the grace period is too long"))?;
    sqlx::query(
        "UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), $2), \
         updated_at = clock_timestamp() WHERE id = $1",
    )
    .bind(id)
    .bind(until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(issued)
}

/// Runs a `keys` subcommand, printing to stdout.
pub async fn run_cli(pool: &PgPool, action: KeysAction) -> anyhow::Result<()> {
    let print_issued = |issued: &IssuedKey| {
        let r = &issued.record;
        println!("{}", issued.key);
        eprintln!(
            "created key {} ({}) with scopes {}{}; the key above is shown only now",
            r.id,
            r.name,
            r.scopes.join(","),
            r.expires_at.map(|at| format!(", expiring {}", at.to_rfc3339())).unwrap_or_default()
        );
    };
    match action {
        KeysAction::Create { name, scopes, expires_in_days } => {
            let scopes = Scope::parse_list(&scopes)?;
            let expires_at = expires_in_days.map(|days| Utc::now() + chrono::TimeDelta::days(i64::from(days)));
            print_issued(&create(pool, &name, &scopes, expires_at).await?);
        }
        KeysAction::List => {
            let now = Utc::now();
            let time =
                |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string());
            println!(
                "{:<12}  {:<8}  {:<36}  {:<16}  {:<16}  {:<16}  name",
                "id", "state", "scopes", "created", "expires", "last used"
            );
            for key in list(pool).await? {
                println!(
                    "{:<12}  {:<8}  {:<36}  {:<16}  {:<16}  {:<16}  {}",
                    key.id,
                    key.state(now),
                    key.scopes.join(","),
                    time(Some(key.created_at)),
                    time(key.expires_at),
                    time(key.last_used_at),
                    key.name
                );
            }
        }
        KeysAction::Revoke { id } => {
            if !revoke(pool, &id).await? {
                anyhow::bail!("no active key with id {id:?}");
            }
            eprintln!("revoked key {id}: every replica refuses it within KEY_REFRESH_MS");
        }
        KeysAction::Rotate { id, grace_hours } => {
            let issued = rotate(pool, &id, Duration::from_secs(u64::from(grace_hours) * 3600)).await?;
            print_issued(&issued);
            eprintln!("key {id} keeps working for {grace_hours} h");
        }
    }
    Ok(())
}

/// `(count, max(updated_at), sum of updated_at)` of `api_keys`: any change to a key changes it.
type TableVersion = (i64, Option<DateTime<Utc>>, Option<f64>);

/// What a replica reads of a key.
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    secret_sha256: Vec<u8>,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// A database key as a replica keeps it.
#[derive(Debug, Clone)]
struct StoredKey {
    identity: Arc<KeyIdentity>,
    digest: [u8; 32],
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

/// What a presented key turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid.
    Accepted(Arc<KeyIdentity>),
    /// Not valid; the message says why (unknown, expired, revoked).
    Refused(String),
}

/// The keys this replica accepts: `API_KEYS` from the environment and the `api_keys` table.
pub struct KeyStore {
    env: Vec<([u8; 32], Arc<KeyIdentity>)>,
    db: ArcSwap<HashMap<String, StoredKey>>,
    /// The table's version when it was last read.
    version: Mutex<Option<TableVersion>>,
    /// Uses not yet written to `last_used_at`.
    used: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("env_keys", &self.env.len()).field("db_keys", &self.db.load().len()).finish()
    }
}

impl KeyStore {
    /// A store of the `API_KEYS` entries: `<sha256 hex>` (every scope) or
    /// `<sha256 hex>:<scope>+<scope>`. The table is read by [`Self::refresh`].
    pub fn from_env(entries: &[String]) -> anyhow::Result<Self> {
        let mut env = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (digest, scopes) = match entry.split_once(':') {
                Some((d, s)) => (d, Scope::parse_list(s)?),
                None => (entry, Scope::ALL.to_vec()),
            };
            let mut bytes = [0u8; 32];
            if hex::decode_to_slice(digest, &mut bytes).is_err() {
                anyhow::bail!(
                    "API_KEYS entry {digest:.12}… is not a sha256 hex digest (use `house-price-api hash-key`)"
                );
            }
            let id = format!("env:{}", &digest[..12].to_ascii_lowercase());
            env.push((bytes, Arc::new(KeyIdentity { id, scopes })));
        }
        Ok(Self { env, db: ArcSwap::default(), version: Mutex::new(None), used: Mutex::default() })
    }

    /// Whether the key with this id still works at `now` (not revoked, not expired): open
    /// WebSocket operations and subscriptions check it again, since they outlive the request that
    /// presented the key. Keys from `API_KEYS` always do.
    pub fn is_active(&self, id: &str, now: DateTime<Utc>) -> bool {
        if id.starts_with("env:") {
            return true;
        }
        self.db.load().get(id).is_some_and(|key| !key.revoked && key.expires_at.is_none_or(|at| at > now))
    }

    /// Whether no key at all exists (operations that always need one are then `FORBIDDEN`).
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.db.load().is_empty()
    }

    /// Checks a presented key at `now`.
    pub fn verify(&self, presented: &str, now: DateTime<Utc>) -> Verdict {
        let refused = |why: &str| Verdict::Refused(why.to_owned());
        if let Some((id, secret)) = split_key(presented) {
            let keys = self.db.load();
            let Some(key) = keys.get(id) else { return refused("the API key is not valid") };
            if !bool::from(key.digest.ct_eq(&secret_digest(secret))) {
                return refused("the API key is not valid");
            }
            if key.revoked {
                return refused("the API key has been revoked");
            }
            if key.expires_at.is_some_and(|at| at <= now) {
                return refused("the API key has expired");
            }
            self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_owned(), now);
            return Verdict::Accepted(key.identity.clone());
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match self.env.iter().find(|(d, _)| bool::from(d.ct_eq(&digest))) {
            Some((_, identity)) => Verdict::Accepted(identity.clone()),
            None => refused("the API key is not valid"),
        }
    }

    /// Re-reads the table if it changed since the last read, and writes the uses seen since.
    pub async fn refresh(&self, pool: &PgPool) -> sqlx::Result<()> {
        self.flush_uses(pool).await?;
        // The sum catches a change whose updated_at is not the newest (two revocations at once,
        // a clock stepped back), which count and max alone would miss.
        let version: TableVersion = sqlx::query_as(
            "SELECT count(*), max(updated_at), sum(extract(epoch FROM updated_at))::float8 FROM api_keys",
        )
        .fetch_one(pool)
        .await?;
        if *self.version.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == Some(version) {
            return Ok(());
        }
        let rows: Vec<KeyRow> =
            sqlx::query_as("SELECT id, secret_sha256, scopes, expires_at, revoked_at FROM api_keys")
                .fetch_all(pool)
                .await?;
        let keys = rows
            .into_iter()
            .filter_map(|row| {
                let digest: [u8; 32] = row.secret_sha256.try_into().ok()?;
                let scopes = row.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
                let identity = Arc::new(KeyIdentity { id: row.id.clone(), scopes });
                let key = StoredKey { identity, digest, expires_at: row.expires_at, revoked: row.revoked_at.is_some() };
                Some((row.id, key))
            })
            .collect::<HashMap<_, _>>();
        tracing::debug!(keys = keys.len(), "API keys re-read");
        self.db.store(Arc::new(keys));
        *self.version.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(version);
        Ok(())
    }

    async fn flush_uses(&self, pool: &PgPool) -> sqlx::Result<()> {
        let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if used.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) = used.into_iter().unzip();
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at) \
             FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at) WHERE k.id = u.id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Refreshes every `period` until `shutdown` (and once more then, to write the last uses).
    pub fn spawn_refresh(self: Arc<Self>, pool: PgPool, period: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = shutdown.cancelled() => {
                        let _ = self.flush_uses(&pool).await;
                        return;
                    }
                }
                if let Err(err) = self.refresh(&pool).await {
                    // The keys last read keep working; a revocation waits for the database.
                    tracing::warn!(error = %err, "cannot re-read the API keys");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_id_and_secret_only_in_their_exact_form() {
        let key = format!("hpk_0123456789ab_{}", "f".repeat(64));
        assert_eq!(split_key(&key), Some(("0123456789ab", "f".repeat(64).as_str())));
        for bad in [
            "0123456789ab".to_owned(),
            format!("hpk_0123456789a_{}", "f".repeat(64)),
            format!("hpk_0123456789AB_{}", "f".repeat(64)),
            format!("hpk_0123456789ab_{}", "f".repeat(63)),
            format!("hpk_0123456789ab{}", "f".repeat(65)),
        ] {
            assert_eq!(split_key(&bad), None, "{bad}");
        }
    }

    #[test]
    fn environment_keys_are_digests_with_optional_scopes() {
        let store =
            KeyStore::from_env(&[hash_key("admin-secret"), format!("{}:outcomes", hash_key("labeller"))]).unwrap();
        let now = Utc::now();
        let Verdict::Accepted(admin) = store.verify("admin-secret", now) else { panic!("admin refused") };
        assert_eq!(admin.id, format!("env:{}", &hash_key("admin-secret")[..12]));
        assert_eq!(admin.scopes, Scope::ALL);
        let Verdict::Accepted(labeller) = store.verify("labeller", now) else { panic!("labeller refused") };
        assert_eq!(labeller.scopes, [Scope::Outcomes]);
        assert_eq!(store.verify("guess", now), Verdict::Refused("the API key is not valid".into()));
        assert!(!store.is_empty());
        assert!(KeyStore::from_env(&[]).unwrap().is_empty());
    }

    #[test]
    fn malformed_environment_entries_are_refused() {
        assert!(KeyStore::from_env(&["plain-text-key".into()]).is_err());
        assert!(KeyStore::from_env(&[format!("{}:admin", hash_key("k"))]).is_err());
    }

    #[test]
    fn database_keys_are_checked_by_secret_revocation_and_expiry() {
        let store = KeyStore::from_env(&[]).unwrap();
        let now = Utc::now();
        let secret = "a".repeat(64);
        let stored = |expires_at, revoked| StoredKey {
            identity: Arc::new(KeyIdentity { id: "0123456789ab".into(), scopes: vec![Scope::Predict] }),
            digest: secret_digest(&secret),
            expires_at,
            revoked,
        };
        let key = format!("hpk_0123456789ab_{secret}");
        let verdict = |store: &KeyStore, key: &str| match store.verify(key, now) {
            Verdict::Accepted(identity) => Ok(identity.id.clone()),
            Verdict::Refused(why) => Err(why),
        };
        store.db.store(Arc::new(HashMap::from([("0123456789ab".to_owned(), stored(None, false))])));
        assert_eq!(verdict(&store, &key), Ok("0123456789ab".to_owned()));
        assert!(store.used.lock().unwrap().contains_key("0123456789ab"), "the use is remembered");
        let wrong_secret = format!("hpk_0123456789ab_{}", "b".repeat(64));
        assert_eq!(verdict(&store, &wrong_secret).unwrap_err(), "the API key is not valid");
        store.db.store(Arc::new(HashMap::from([("0123456789ab".to_owned(), stored(None, true))])));
        assert_eq!(verdict(&store, &key).unwrap_err(), "the API key has been revoked");
        let past = Some(now - chrono::TimeDelta::seconds(1));
        store.db.store(Arc::new(HashMap::from([("0123456789ab".to_owned(), stored(past, false))])));
        assert_eq!(verdict(&store, &key).unwrap_err(), "the API key has expired");
    }
}
