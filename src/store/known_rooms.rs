//! Rooms this process has already found in the database. Rooms are never deleted (nothing in
//! the app removes one, and their ids are never reused), so once a room has been read it exists
//! for good, and a socket opening in it need not ask the database again. Only that a room
//! exists is kept, not its name, which can change. A room created by another process is simply
//! not known yet: the first check reads it.
//!
//! Why it is worth a type: every presence socket names its room in its URL, and 500 of them
//! opening at once were 500 reads queued on the pool's connections (on SQLite, 500 hand-offs to
//! a reading thread) in front of their handshakes.

use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
};

use super::{Store, StoreError};
use crate::models::RoomId;

/// Rooms remembered at most; past that the set starts over (a few hundred KB at most).
const KEPT: usize = 16_384;

#[derive(Debug, Default)]
pub struct KnownRooms {
    ids: Mutex<HashSet<RoomId>>,
}

impl KnownRooms {
    /// `Ok` if room `id` exists, reading the database only the first time; [`StoreError::NotFound`]
    /// if it does not (which is not remembered: it may be created later).
    pub async fn check(&self, store: &Store, id: RoomId) -> Result<(), StoreError> {
        if self.ids().contains(&id) {
            return Ok(());
        }
        store.find_room(id).await?;
        let mut ids = self.ids();
        if ids.len() >= KEPT {
            ids.clear();
        }
        ids.insert(id);
        Ok(())
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<RoomId>> {
        // The set holds plain ids: whatever a panicking holder left is still a valid set.
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::RoomName;

    #[tokio::test]
    async fn a_room_is_read_once_and_a_missing_one_is_looked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/known.sqlite3", dir.path().display());
        let store = Store::connect(&url, 1).await.unwrap();
        let known = KnownRooms::default();

        let room = store
            .create_room(&RoomName::parse("Kitchen").unwrap())
            .await
            .unwrap();
        known.check(&store, room.id).await.unwrap();
        let missing = RoomId(room.id.0 + 1);
        assert!(matches!(
            known.check(&store, missing).await,
            Err(StoreError::NotFound)
        ));

        // With the database gone, the room found before is still known, and only it.
        store.close().await;
        known.check(&store, room.id).await.unwrap();
        assert!(known.check(&store, missing).await.is_err());

        // A room that did not exist is not remembered as missing: once created, it is found.
        let store = Store::connect(&url, 1).await.unwrap();
        let created = store
            .create_room(&RoomName::parse("Garden").unwrap())
            .await
            .unwrap();
        assert_eq!(created.id, missing);
        known.check(&store, missing).await.unwrap();
    }
}
