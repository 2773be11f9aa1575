//! tasksync: real-time task rooms in the split-transport style. HTTP form posts make every change
//! and answer with Turbo Stream fragments; sockets carry the same fragments to everyone else.

pub mod assets;
pub mod cable;
pub mod compress;
pub mod config;
pub mod controllers;
pub mod csrf;
pub mod error;
pub mod form_guard;
pub mod headers;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod observability;
pub mod origin;
pub mod presence;
pub mod pubsub;
pub mod request_headers;
pub mod session;
pub mod signing;
pub mod socket;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod write_lane;
