//! The `models` table: the current Isolation Forest of each API.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::model::{ForestFormat, Model, ModelError, ModelParams, Scaler};

/// A model with its identity.
#[derive(Debug)]
pub struct StoredModel {
    pub api_name: String,
    /// Increases by one at each retraining of the API.
    pub version: i64,
    pub trained_at: DateTime<Utc>,
    pub model: Model,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Params {
    params: ModelParams,
    scaler: Scaler,
    /// How `forest` is encoded; models stored before the field existed
    /// hold the crate's own form.
    #[serde(default = "crate_format")]
    forest_format: ForestFormat,
}

fn crate_format() -> ForestFormat {
    ForestFormat::Crate
}

/// Why a stored model could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("model of {api}: {reason}")]
    Corrupt { api: String, reason: String },
}

/// Saves `model` as the current one of `api_name`; returns its version.
pub async fn save(
    pool: &PgPool,
    api_name: &str,
    trained_at: DateTime<Utc>,
    model: &Model,
) -> Result<i64, ModelSaveError> {
    let (forest_format, forest) = model.forest_bytes()?;
    let params = serde_json::to_value(Params {
        params: model.params.clone(),
        scaler: model.scaler.clone(),
        forest_format,
    })
    .map_err(|e| ModelSaveError::Encode(e.to_string()))?;
    let version = sqlx::query_scalar(
        r#"
        INSERT INTO models (api_name, version, trained_at, sample_count, score_offset, params, forest)
        VALUES ($1, 1, $2, $3, $4, $5, $6)
        ON CONFLICT (api_name) DO UPDATE SET
            version = models.version + 1, trained_at = EXCLUDED.trained_at,
            sample_count = EXCLUDED.sample_count, score_offset = EXCLUDED.score_offset,
            params = EXCLUDED.params, forest = EXCLUDED.forest
        RETURNING version
        "#,
    )
    .bind(api_name)
    .bind(trained_at)
    .bind(i32::try_from(model.sample_count).unwrap_or(i32::MAX))
    .bind(model.offset)
    .bind(params)
    .bind(forest)
    .fetch_one(pool)
    .await?;
    Ok(version)
}

/// The version [`save`] will give `api_name`'s next model (1 for its
/// first), so that the model can be seeded with it before it is trained
/// (see `model::model_seed`).
pub async fn next_version(pool: &PgPool, api_name: &str) -> Result<i64, sqlx::Error> {
    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM models WHERE api_name = $1")
        .bind(api_name)
        .fetch_optional(pool)
        .await?;
    Ok(current.map_or(1, |v| v + 1))
}

/// Why a model could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum ModelSaveError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot encode the model parameters: {0}")]
    Encode(String),
}

type Row = (
    String,
    i64,
    DateTime<Utc>,
    i32,
    f64,
    serde_json::Value,
    Vec<u8>,
);

/// Loads the stored models of `apis`. A row that cannot be decoded is
/// returned as an error beside the others, so one bad row costs only its
/// API a retraining.
pub async fn load(
    pool: &PgPool,
    apis: &[String],
) -> Result<Vec<Result<StoredModel, LoadError>>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT api_name, version, trained_at, sample_count, score_offset, params, forest
         FROM models WHERE api_name = ANY($1)",
    )
    .bind(apis)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(decode).collect())
}

fn decode(row: Row) -> Result<StoredModel, LoadError> {
    let (api_name, version, trained_at, sample_count, offset, params, forest) = row;
    let corrupt = |reason: String| LoadError::Corrupt {
        api: api_name.clone(),
        reason,
    };
    let p: Params = serde_json::from_value(params).map_err(|e| corrupt(e.to_string()))?;
    if !offset.is_finite() {
        return Err(corrupt("non-finite score offset".into()));
    }
    let model = Model::from_parts(
        p.params,
        p.scaler,
        offset,
        usize::try_from(sample_count).unwrap_or(0),
        p.forest_format,
        &forest,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredModel {
        api_name,
        version,
        trained_at,
        model,
    })
}

/// Retention: deletes up to `limit` models of APIs that are no longer
/// checked: retired before `before`, or not registered at all and trained
/// before `before`. An API has one model (replaced at each retraining), so
/// this is the only way the table grows. Returns how many.
pub async fn delete_retired_batch(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM models WHERE api_name = ANY(ARRAY(
               SELECT m.api_name FROM models m
               LEFT JOIN api_endpoints e ON e.api_name = m.api_name
               WHERE e.retired_at < $1 OR (e.api_name IS NULL AND m.trained_at < $1)
               LIMIT $2))"#,
        before,
        limit,
    )
    .await
}
