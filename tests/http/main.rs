//! The real `jobq serve` driven over HTTP: every endpoint, every error class,
//! authentication and its scopes, limits, streaming; /metrics and /health.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../pyenv/mod.rs"]
mod pyenv;

mod auth;
mod endpoints;
mod errors;
mod extensions;
mod feed;
mod metrics;
mod writes;
