//! End-to-end tests: the real server over HTTP, real PostgreSQL, real NATS JetStream.
//! One binary (faster to build and link); one module per area.

#![allow(missing_docs, clippy::unwrap_used)]

mod amounts;
mod api_flow;
mod audit;
mod auth;
mod bad_input;
mod clients;
mod cluster;
mod concurrency;
mod console;
mod contracts;
mod deadlines;
mod event_store;
mod faults;
mod fees;
mod frozen;
mod guarantees;
mod hostile;
mod integrations;
mod logins;
mod milestones;
mod money_in;
mod money_out;
mod notifications;
mod openapi;
mod operations;
mod read_after_write;
mod relay;
mod replay;
mod restore;
mod seed_paths;
mod sessions;
mod sockets;
mod standby;
mod statements;
mod upcasting;
mod verify;
mod webhooks;
mod write_side;
