//! The alerter: tells people about anomalies at once (with cooldowns),
//! about APIs that go down and come back, and every few minutes in a status
//! report; by email and webhooks, through an outbox that loses nothing.

pub mod alerts;
pub mod baseline;
pub mod channels;
pub mod compose;
pub mod config;
pub mod outbox;
pub mod report;
pub mod service;
pub mod silence;
