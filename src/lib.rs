//! lariat: an OpenAI-compatible gateway that runs the agent loop for its clients.
//!
//! Modules in the order a request meets them: `server` accepts it, `auth` names the
//! caller, `config` resolves the virtual model, `agent` drives the answer through
//! `upstream`, and `error` turns any failure into an OpenAI-shaped response.

pub mod server;

pub mod auth;
pub mod config;
pub mod openai;

pub mod agent;
pub mod compact;
pub mod upstream;

pub mod clock;
pub mod error;
pub mod globs;
pub mod redact;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod tools;
pub mod worker;
