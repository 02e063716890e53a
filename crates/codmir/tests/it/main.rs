#![allow(clippy::unwrap_used, dead_code)]
//! Integration tests: the real server on an ephemeral port with a fresh SQLite file, driven
//! over HTTP, and real receivers started by the tests.

mod api;
mod at_rest;
mod auth;
mod chaos;
mod cli;
mod commands;
mod conformance;
mod connections;
mod crash;
mod dashboard;
mod delivery;
mod delivery_log;
mod events;
mod failures;
mod fairness;
mod faults;
mod first_run;
mod guides;
mod helpers;
mod hostile;
mod idempotency;
mod listen;
mod nodes;
mod observability;
mod operations;
mod own_pg;
mod process;
mod proxy;
mod receiver;
mod receiving;
mod request_fuzz;
mod ssrf;
mod stats;
mod tls;
