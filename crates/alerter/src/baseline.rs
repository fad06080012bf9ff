//! Each API's usual response times (mean and p95 of its successful checks
//! over `BASELINE_WINDOW`), cached for an hour.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;

use crate::compose::Baseline;

const TTL: Duration = Duration::from_secs(3600);

pub struct Baselines {
    window: Duration,
    cache: HashMap<String, (Instant, Option<Baseline>)>,
}

impl Baselines {
    pub fn new(window: Duration) -> Baselines {
        Baselines {
            window,
            cache: HashMap::new(),
        }
    }

    /// The baseline of `api`, from the cache when fresh.
    pub async fn get(&mut self, pool: &PgPool, api: &str) -> Result<Option<Baseline>, sqlx::Error> {
        if let Some((at, b)) = self.cache.get(api) {
            if at.elapsed() < TTL {
                return Ok(*b);
            }
        }
        let all = self.load(pool, Some(api)).await?;
        let b = all.get(api).copied();
        self.cache.insert(api.to_string(), (Instant::now(), b));
        Ok(b)
    }

    /// Baselines of every API, refreshing the cache.
    pub async fn all(&mut self, pool: &PgPool) -> Result<HashMap<String, Baseline>, sqlx::Error> {
        let fresh = !self.cache.is_empty() && self.cache.values().all(|(at, _)| at.elapsed() < TTL);
        if fresh {
            return Ok(self
                .cache
                .iter()
                .filter_map(|(k, (_, b))| b.map(|b| (k.clone(), b)))
                .collect());
        }
        let all = self.load(pool, None).await?;
        let now = Instant::now();
        self.cache = all
            .iter()
            .map(|(k, b)| (k.clone(), (now, Some(*b))))
            .collect();
        Ok(all)
    }

    async fn load(
        &self,
        pool: &PgPool,
        api: Option<&str>,
    ) -> Result<HashMap<String, Baseline>, sqlx::Error> {
        let from = Utc::now()
            - chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::days(7));
        let rows: Vec<(String, Option<f64>, Option<f64>)> = sqlx::query_as(
            r#"SELECT api_name, avg(response_time_ms),
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms)
               FROM api_metrics
               WHERE "timestamp" > $1 AND success AND response_time_ms IS NOT NULL
                 AND ($2::text IS NULL OR api_name = $2)
               GROUP BY api_name"#,
        )
        .bind(from)
        .bind(api)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(a, mean, p95)| {
                Some((
                    a,
                    Baseline {
                        mean_ms: mean?,
                        p95_ms: p95?,
                    },
                ))
            })
            .collect())
    }

    /// Forgets everything (tests).
    pub fn clear(&mut self) {
        self.cache.clear();
    }
}
