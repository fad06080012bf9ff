//! apimon-core: what the pinger, detector and alerter share — configuration,
//! the endpoints file and its maintenance windows, the schema and its
//! database access, and sharding.

pub mod apis;
pub mod assertions;
pub mod backoff;
pub mod certs;
pub mod config;
pub mod db;
pub mod features;
pub mod forest;
pub mod glob;
pub mod health;
pub mod incidents;
pub mod listen;
pub mod maintenance;
pub mod model;
pub mod redact;
pub mod retention;
pub mod shard;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, DbConfig, Env};
