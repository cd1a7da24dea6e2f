//! HTTP routes: the webhook endpoint and the operational endpoints.

pub mod health;
pub mod metrics;
pub mod webhook;
