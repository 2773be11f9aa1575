//! Integration tests: the real server on a random port, driven over HTTP, against SQLite (a temp
//! file) and PostgreSQL (a fresh database per test). One binary, so the suite links once.

mod helpers;

mod assets;
mod health;
mod input;
mod rooms;
mod sessions;
mod startup;
mod store;
mod tasks;
