//! The detector: turns `api_metrics` rows into `anomalies` with one
//! Isolation Forest per API, streaming (seconds after each check) or
//! replaying history through the same code.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod replay;
pub mod service;
pub mod trainer;
