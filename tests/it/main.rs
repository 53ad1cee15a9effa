//! lariat's integration tests: one binary, one module per capability, all sharing
//! `harness` (scripted mock upstream + lariat on a loopback port).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test code fails loudly on purpose, and measures real time against real sockets; the crate's lints guard production code"
)]

mod harness;
mod mcp_server;
mod redis_server;

mod answer;
mod api;
mod auth;
mod bounds;
mod cli;
mod clients;
mod compaction;
mod confirm;
mod errors;
mod fallback;
mod first_run;
mod fuzz;
mod identity;
mod layout;
mod limits;
mod logs;
mod mcp;
mod mcp_raw;
mod mcp_stderr;
mod probes;
mod progress;
mod relay;
mod responses;
mod responses_state;
mod sdk;
mod secrets;
mod ssrf;
mod store;
mod streaming;
mod threads;
mod tools;
