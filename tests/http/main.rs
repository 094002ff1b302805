//! The real `jobq serve` driven over HTTP: every endpoint, every error class,
//! authentication and its scopes, limits, streaming.

#[path = "../harness/mod.rs"]
mod harness;

mod auth;
mod endpoints;
mod errors;
mod writes;
