//! The model set in force across replicas (`model_set_in_force`): recorded by the replica that
//! last loaded a set, compared by every other one with what it serves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::registry::ModelSet;

/// One model of a set: `name@version` and its artifact's digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelDigest {
    /// `name@version`.
    pub id: String,
    /// sha256 of the artifact.
    pub sha256: String,
}

/// What a set is, for comparing replicas: its models (sorted), default and shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDigest {
    /// Every model, sorted by id.
    pub models: Vec<ModelDigest>,
    /// `name@version` answering by default.
    pub default_model: String,
    /// `name@version` of the shadow model.
    pub shadow_model: Option<String>,
    /// `name@version` answering requests with only the three required inputs.
    pub three_input_model: Option<String>,
}

impl SetDigest {
    /// The digest of a loaded set.
    pub fn of(set: &ModelSet) -> Self {
        let mut models: Vec<ModelDigest> =
            set.models().iter().map(|m| ModelDigest { id: m.id(), sha256: m.card.artifact.sha256.clone() }).collect();
        models.sort();
        Self {
            models,
            default_model: set.default_model().id(),
            shadow_model: set.shadow_model().map(|m| m.id()),
            three_input_model: set.three_input_model().map(|m| m.id()),
        }
    }

    /// Why a replica serving `self` does not serve `in_force`, one line per difference (empty:
    /// the same set).
    pub fn differences(&self, in_force: &Self) -> Vec<String> {
        let mut out = Vec::new();
        for wanted in &in_force.models {
            match self.models.iter().find(|m| m.id == wanted.id) {
                None => out.push(format!("{} is not in this replica's MODEL_DIR", wanted.id)),
                Some(m) if m.sha256 != wanted.sha256 => out.push(format!(
                    "{} has another artifact here (sha256 {}…, in force {}…)",
                    wanted.id,
                    &m.sha256[..m.sha256.len().min(12)],
                    &wanted.sha256[..wanted.sha256.len().min(12)]
                )),
                Some(_) => {}
            }
        }
        for extra in self.models.iter().filter(|m| !in_force.models.iter().any(|w| w.id == m.id)) {
            out.push(format!("{} is served here but not in force", extra.id));
        }
        if self.default_model != in_force.default_model {
            out.push(format!("the default model is {} here, {} in force", self.default_model, in_force.default_model));
        }
        let name = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".into());
        for (role, here, wanted) in [
            ("shadow", &self.shadow_model, &in_force.shadow_model),
            ("three-input", &self.three_input_model, &in_force.three_input_model),
        ] {
            if here != wanted {
                out.push(format!("the {role} model is {} here, {} in force", name(here), name(wanted)));
            }
        }
        out
    }
}

/// The recorded set in force.
#[derive(Debug, Clone)]
pub struct InForce {
    /// Bumped at every change.
    pub revision: i64,
    /// The set.
    pub digest: SetDigest,
    /// When it was recorded.
    pub changed_at: DateTime<Utc>,
    /// Replica that loaded it.
    pub changed_by: String,
}

/// Records `set` as the set in force (loaded by `replica` on `trigger`); returns its revision.
#[tracing::instrument(name = "model_set_in_force.record", skip(pool, set))]
pub async fn record(pool: &PgPool, set: &ModelSet, replica: &str, trigger: &str) -> sqlx::Result<i64> {
    let digest = SetDigest::of(set);
    sqlx::query_scalar(
        "insert into model_set_in_force as f
                (revision, models, default_model, shadow_model, three_input_model, changed_by, trigger)
         values (1, $1, $2, $3, $6, $4, $5)
         on conflict (singleton) do update
            set revision = f.revision + 1, models = excluded.models, default_model = excluded.default_model,
                shadow_model = excluded.shadow_model, three_input_model = excluded.three_input_model,
                changed_at = now(), changed_by = excluded.changed_by, trigger = excluded.trigger
         returning revision",
    )
    .bind(sqlx::types::Json(&digest.models))
    .bind(&digest.default_model)
    .bind(&digest.shadow_model)
    .bind(replica)
    .bind(trigger)
    .bind(&digest.three_input_model)
    .fetch_one(pool)
    .await
}

/// A `model_set_in_force` row as [`read`] selects it.
#[derive(sqlx::FromRow)]
struct InForceRow {
    revision: i64,
    models: sqlx::types::Json<Vec<ModelDigest>>,
    default_model: String,
    shadow_model: Option<String>,
    three_input_model: Option<String>,
    changed_at: DateTime<Utc>,
    changed_by: String,
}

/// The set in force; `None` before any replica recorded one.
#[tracing::instrument(name = "model_set_in_force.read", skip(pool))]
pub async fn read(pool: &PgPool) -> sqlx::Result<Option<InForce>> {
    let row: Option<InForceRow> = sqlx::query_as(
        "select revision, models, default_model, shadow_model, three_input_model, changed_at, changed_by
           from model_set_in_force",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let mut models = r.models.0;
        models.sort();
        let digest = SetDigest {
            models,
            default_model: r.default_model,
            shadow_model: r.shadow_model,
            three_input_model: r.three_input_model,
        };
        InForce { revision: r.revision, digest, changed_at: r.changed_at, changed_by: r.changed_by }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(models: &[(&str, &str)], default: &str) -> SetDigest {
        SetDigest {
            models: models.iter().map(|(id, sha)| ModelDigest { id: (*id).into(), sha256: (*sha).into() }).collect(),
            default_model: default.into(),
            shadow_model: None,
            three_input_model: None,
        }
    }

    #[test]
    fn differences_name_each_missing_extra_or_changed_model_and_role() {
        let in_force = digest(&[("a@1", "aaaa"), ("b@1", "bbbb")], "a@1");
        assert!(in_force.differences(&in_force).is_empty());
        let here = SetDigest { shadow_model: Some("c@1".into()), ..digest(&[("a@1", "ffff"), ("c@1", "cccc")], "c@1") };
        assert_eq!(
            here.differences(&in_force),
            [
                "a@1 has another artifact here (sha256 ffff…, in force aaaa…)",
                "b@1 is not in this replica's MODEL_DIR",
                "c@1 is served here but not in force",
                "the default model is c@1 here, a@1 in force",
                "the shadow model is c@1 here, none in force",
            ]
        );
    }
}
