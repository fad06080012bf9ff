//! The alerter: tells people about incidents (an API down or slow, as the
//! detector's incident rules decide) when they open, while they stay open
//! and when they resolve, grouped and silenced as configured; and every few
//! minutes in a status report; by email and webhooks, through an outbox
//! that loses nothing.

pub mod baseline;
pub mod catalog;
pub mod channels;
pub mod compose;
pub mod config;
pub mod dispatch;
pub mod outbox;
pub mod replay;
pub mod report;
pub mod service;
pub mod silence;
