//! Copies each loaded model version's reference distributions into `model_references`, so SQL
//! views can compare live traffic with training.

use sqlx::PgPool;

use crate::model::ModelSet;
use crate::model::card::Distribution;

/// Upserts the references of every model in `set` (idempotent: a version's card never changes).
pub async fn sync(pool: &PgPool, set: &ModelSet) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for model in set.models() {
        let card = &model.card;
        for (feature, reference) in card.references() {
            let (kind, edges, labels, min, max, std) = match reference {
                &Distribution::Bins { ref edges, min, max, std, .. } => {
                    ("bins", Some(edges.clone()), None, Some(min), Some(max), Some(std))
                }
                Distribution::Categories { counts } => {
                    ("categories", None, Some(counts.keys().cloned().collect::<Vec<_>>()), None, None, None)
                }
            };
            let counts: Vec<i64> = reference.counts().into_iter().map(|c| c as i64).collect();
            sqlx::query(
                "insert into model_references
                     (model_name, model_version, feature, kind, edges, labels, counts, min_value, max_value, std_value)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 on conflict (model_name, model_version, feature) do update set
                     kind = excluded.kind, edges = excluded.edges, labels = excluded.labels, counts = excluded.counts,
                     min_value = excluded.min_value, max_value = excluded.max_value, std_value = excluded.std_value",
            )
            .bind(&card.name)
            .bind(&card.version)
            .bind(feature)
            .bind(kind)
            .bind(edges)
            .bind(labels)
            .bind(counts)
            .bind(min)
            .bind(max)
            .bind(std)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}
