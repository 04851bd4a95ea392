//! The HTTP API (axum, JSON) through which commands reach running jobs.
//! `wrun run` serves it on loopback for its one job (embedded mode);
//! `wrun serve` serves the same routes for many jobs, plus deployment
//! (through a [`Deployer`]).
//!
//! Every request needs `Authorization: Bearer <token>`; the token lives in
//! the data directory (`api-token`, mode 0600). Long operations
//! (checkpoints, savepoints, stops) answer `202 Accepted` with a request
//! ID to poll, as in Flink's REST API. Errors are
//! `{"error": "...", "causes": [...]}`.
//! Routes are listed in docs/api.md.
//!
//! - `error.rs`: [`ApiError`], [`ErrorKind`] and the error JSON;
//! - `types.rs`: request and response bodies, shared with the client;
//! - `state.rs`: [`ApiState`], the [`Deployer`] hook, [`Modules`];
//! - `requests.rs`: asynchronous requests, bounded and expiring;
//! - `extract.rs`: the strict extractors every route reads input with;
//! - `auth.rs`: the bearer token (or the dashboard's cookie) and its check;
//! - `history.rs`: the last minutes of each job's vertex metrics;
//! - `ui.rs`: the dashboard's pages and its login;
//! - `cluster.rs`: in a fleet, forwarding to the node that runs a job;
//! - `routes/`: the router and a file per resource;
//! - `server.rs`: serving on a thread of its own;
//! - `client.rs`: the CLI's side.

mod auth;
mod client;
mod cluster;
mod error;
mod extract;
mod history;
mod requests;
mod routes;
mod server;
mod state;
mod types;
mod ui;

pub use auth::{set_token, token};
pub use client::{Client, Endpoint};
pub use cluster::{Cluster, Draining, FORWARDED, NodeList};
pub use error::{ApiError, ErrorKind};
pub use requests::{KEEP_FINISHED, MAX_FINISHED, MAX_IN_FLIGHT_PER_JOB};
pub use routes::{checkpoint_rows, router};
pub use server::{Server, endpoint_path, serve};
pub use state::{ApiState, Deployer, Modules};
pub use types::*;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
