//! Each API's usual response times: mean and p95 of its successful checks
//! over `BASELINE_WINDOW` (7 days) before the period being judged, so that
//! the period does not dilute its own baseline. Checks that belong to an
//! incident (from its first bad check to its recovery, or still open) are
//! left out, so that a slowdown does not become part of "usual" and hide
//! the next one. Cached for up to an hour.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::compose::Baseline;

const TTL: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy)]
struct Entry {
    computed: Instant,
    /// Data before this time only.
    until: DateTime<Utc>,
    value: Option<Baseline>,
}

impl Entry {
    /// Usable for a period that starts at `until`: fresh, and computed from
    /// data before that start.
    fn usable(&self, until: DateTime<Utc>) -> bool {
        self.computed.elapsed() < TTL && self.until <= until
    }
}

pub struct Baselines {
    window: Duration,
    cache: HashMap<String, Entry>,
}

impl Baselines {
    pub fn new(window: Duration) -> Baselines {
        Baselines {
            window,
            cache: HashMap::new(),
        }
    }

    /// The baseline of `api` from data before `until`.
    pub async fn get(
        &mut self,
        pool: &PgPool,
        api: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Baseline>, sqlx::Error> {
        // A cached absence of baseline is not trusted: history may have
        // come in since.
        if let Some(e) = self
            .cache
            .get(api)
            .filter(|e| e.value.is_some() && e.usable(until))
        {
            return Ok(e.value);
        }
        let value = self.load(pool, Some(api), until).await?.get(api).copied();
        self.cache.insert(
            api.to_string(),
            Entry {
                computed: Instant::now(),
                until,
                value,
            },
        );
        Ok(value)
    }

    /// Baselines of the APIs of `apis` that have history before `until`.
    /// The cache serves only when it holds a baseline for every one of
    /// them; otherwise (an API without history then, or only looked up by
    /// [`Baselines::get`] for an earlier time) all are loaded again.
    pub async fn all(
        &mut self,
        pool: &PgPool,
        apis: &[String],
        until: DateTime<Utc>,
    ) -> Result<HashMap<String, Baseline>, sqlx::Error> {
        let usable = !apis.is_empty()
            && apis.iter().all(|a| {
                self.cache
                    .get(a)
                    .is_some_and(|e| e.value.is_some() && e.usable(until))
            });
        if !usable {
            let all = self.load(pool, None, until).await?;
            let computed = Instant::now();
            self.cache = all
                .iter()
                .map(|(k, b)| {
                    let e = Entry {
                        computed,
                        until,
                        value: Some(*b),
                    };
                    (k.clone(), e)
                })
                .collect();
            return Ok(all);
        }
        Ok(apis
            .iter()
            .filter_map(|a| self.cache.get(a)?.value.map(|b| (a.clone(), b)))
            .collect())
    }

    async fn load(
        &self,
        pool: &PgPool,
        api: Option<&str>,
        until: DateTime<Utc>,
    ) -> Result<HashMap<String, Baseline>, sqlx::Error> {
        let from =
            until - chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::days(7));
        let rows = apimon_core::db::metrics::baselines(pool, api, from, until).await?;
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
}
