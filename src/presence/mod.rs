//! Presence: who is in a room and who is typing, on a second, JSON WebSocket
//! (`/rooms/:id/presence`), consistent across processes through the pub/sub adapter.

pub mod connection;
pub mod protocol;
pub mod server;
pub mod state;

pub use server::{PresenceConfig, PresenceHandle, PresenceStats};
