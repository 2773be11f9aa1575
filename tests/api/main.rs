//! Integration tests: the real server on a random port, driven over HTTP, against SQLite (a temp
//! file) and PostgreSQL (a fresh database per test). One binary, so the suite links once.

mod helpers;

mod assets;
mod cable;
mod cable_client;
mod cable_memory;
mod cross_process;
mod health;
mod input;
mod presence;
mod processes;
mod pubsub;
mod rooms;
mod sessions;
mod startup;
mod store;
mod tasks;
