//! The cluster tests that run nodes in this process, over the in-memory network,
//! in one test binary: each module was its own binary once, and each built its
//! own copy of openraft's generic core (about 25 s of CPU each in a clean build).
//! Tests that start `jobq serve` processes stay apart (tests/cluster_*.rs).
#![cfg(feature = "cluster")]

mod support;

mod crash;
mod history;
mod install_crash;
mod raft_log;
mod snapshot;
mod snapshot_build;
