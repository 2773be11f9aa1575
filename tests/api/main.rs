//! Integration tests: the real server on a random port, driven over HTTP, against SQLite (a temp
//! file) and PostgreSQL (a fresh database per test). One binary, so the suite links once.

mod helpers;

mod adversarial;
mod anycable;
mod assets;
mod cable;
mod cable_client;
mod cable_memory;
mod compression;
mod config_docs;
mod cross_process;
mod deploy;
mod faults;
mod fuzz_corpus;
mod health;
mod history;
mod history_processes;
mod input;
mod logging;
mod methods;
mod metrics;
mod nginx;
mod presence;
mod private_servers;
mod processes;
mod proxies;
mod pubsub;
mod rolling_restart;
mod rooms;
mod rotation;
mod sessions;
mod startup;
mod store;
mod tasks;
mod three_processes;
mod upgrade;
