//! The runtime the three clio-connect services share.
//!
//! A service is a library exposing `run(config, listener, shutdown)` and
//! `run_with(config, listener, shutdown, Options)`; this crate gives it the parts that are
//! the same everywhere, each in a module named for what it holds: layered config
//! ([`config`]), background tasks and the one shutdown order ([`background`]), logs and
//! traces ([`telemetry`]) with the trace context carried across calls and messages
//! ([`trace_context`]), caller authentication with a per-RPC role allow-list ([`caller_auth`]), dependency-driven gRPC health ([`health`]), the
//! Prometheus endpoint ([`metrics`]) with per-RPC rate, errors and latency
//! ([`rpc_metrics`]), the Postgres pool and embedded migrations
//! ([`database`]), the gRPC/HTTP server with reflection ([`server`]), TLS for both ends of
//! every hop ([`tls`]) and signal handling ([`shutdown`]).

pub mod background;
pub mod backoff;
pub mod caller_auth;
pub mod clock;
pub mod config;
pub mod database;
pub mod decode_errors;
pub mod entrypoint;
pub mod health;
pub mod metrics;
pub mod rpc_metrics;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;

pub use background::{Background, Options};
pub use caller_auth::{AccessPolicy, Caller, Role};
pub use config::{ConfigError, ServiceConfig};
pub use tokio_util::sync::CancellationToken;
