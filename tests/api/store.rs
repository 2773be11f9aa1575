//! One story run against both backends, straight through the `Store`.

use tasksync::{
    models::{
        DisplayName, LockVersion, NewTask, Room, RoomCounts, RoomId, RoomName, Task, TaskChanges,
        TaskId, TaskNotes, TaskTitle,
    },
    store::{Store, StoreError, Updated},
};

use crate::helpers::{Backend, TestDatabase};

async fn store(backend: Backend) -> (Store, TestDatabase) {
    let (db, url) = TestDatabase::create(backend).await;
    (Store::connect(&url, 3).await.expect("store connects"), db)
}

fn new_task(title: &str) -> NewTask {
    NewTask {
        title: TaskTitle::parse(title).unwrap(),
        notes: TaskNotes::default(),
    }
}

fn toggle(done: bool, version: i64) -> TaskChanges {
    TaskChanges {
        title: None,
        notes: None,
        done: Some(done),
        lock_version: LockVersion(version),
    }
}

/// Each call one change to a room, committed when it succeeds, as the controllers make them.
#[derive(Clone, Copy)]
struct OneChange<'a>(&'a Store);

impl OneChange<'_> {
    async fn create_task(
        &self,
        room: RoomId,
        task: &NewTask,
        by: &DisplayName,
        max: i64,
    ) -> Result<(Task, RoomCounts), StoreError> {
        let mut change = self.0.change_room(room).await?;
        let created = change.create_task(task, by, max).await?;
        change.commit().await?;
        Ok(created)
    }

    async fn update_task(
        &self,
        room: RoomId,
        id: TaskId,
        changes: &TaskChanges,
        by: &DisplayName,
    ) -> Result<Updated, StoreError> {
        let mut change = self.0.change_room(room).await?;
        let updated = change.update_task(id, changes, by).await?;
        change.commit().await?;
        Ok(updated)
    }

    async fn delete_task(&self, room: RoomId, id: TaskId) -> Result<RoomCounts, StoreError> {
        let mut change = self.0.change_room(room).await?;
        let counts = change.delete_task(id).await?;
        change.commit().await?;
        Ok(counts)
    }

    async fn clear_completed(&self, room: RoomId) -> Result<(Vec<TaskId>, RoomCounts), StoreError> {
        let mut change = self.0.change_room(room).await?;
        let cleared = change.clear_completed().await?;
        change.commit().await?;
        Ok(cleared)
    }

    async fn rename_room(&self, room: RoomId, name: &RoomName) -> Result<Room, StoreError> {
        let mut change = self.0.change_room(room).await?;
        let renamed = change.rename(name).await?;
        change.commit().await?;
        Ok(renamed)
    }
}

async fn the_store_story(backend: Backend) {
    let (store, _db) = store(backend).await;
    let each = OneChange(&store);
    let ada = DisplayName::parse("Ada").unwrap();
    let grace = DisplayName::parse("Grace").unwrap();

    // Rooms: created, found, renamed, listed newest first with counts.
    let first = store
        .create_room(&RoomName::parse("First").unwrap())
        .await
        .unwrap();
    let second = store
        .create_room(&RoomName::parse("Second").unwrap())
        .await
        .unwrap();
    let renamed = each
        .rename_room(first.id, &RoomName::parse("Renamed").unwrap())
        .await
        .unwrap();
    assert_eq!(renamed.name, "Renamed");
    assert_eq!(store.find_room(first.id).await.unwrap().name, "Renamed");
    let listed: Vec<_> = store
        .list_rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.room.id)
        .collect();
    assert_eq!(listed, vec![second.id, first.id]);

    // Tasks keep their order; counts follow every change.
    let (a, counts) = each
        .create_task(first.id, &new_task("a"), &ada, 3)
        .await
        .unwrap();
    assert_eq!(counts, RoomCounts { open: 1, done: 0 });
    let (b, _) = each
        .create_task(first.id, &new_task("b"), &ada, 3)
        .await
        .unwrap();
    let (c, _) = each
        .create_task(first.id, &new_task("c"), &ada, 3)
        .await
        .unwrap();
    assert!(matches!(
        each.create_task(first.id, &new_task("d"), &ada, 3).await,
        Err(StoreError::RoomFull(3))
    ));
    let ids: Vec<_> = store
        .room_with_tasks(first.id)
        .await
        .unwrap()
        .1
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![a.id, b.id, c.id]);

    // Optimistic locking: the right version wins, a stale one conflicts, a repeat is a no-op.
    let Updated::Changed(done_a, counts) = each
        .update_task(first.id, a.id, &toggle(true, 0), &grace)
        .await
        .unwrap()
    else {
        panic!("expected a change");
    };
    assert!(done_a.done);
    assert_eq!(done_a.lock_version, LockVersion(1));
    assert_eq!(done_a.updated_by, "Grace");
    assert_eq!(counts, RoomCounts { open: 2, done: 1 });
    assert!(matches!(
        each.update_task(first.id, a.id, &toggle(true, 0), &ada).await.unwrap(),
        Updated::Unchanged(ref t, _) if t.lock_version == LockVersion(1)
    ));
    match each
        .update_task(first.id, a.id, &toggle(false, 0), &ada)
        .await
    {
        Ok(Updated::Conflict(current)) => assert_eq!(current.updated_by, "Grace"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let edit = TaskChanges {
        title: Some(TaskTitle::parse("b2").unwrap()),
        notes: Some(TaskNotes::parse("notes").unwrap()),
        done: None,
        lock_version: LockVersion(0),
    };
    let Updated::Changed(b2, _) = each.update_task(first.id, b.id, &edit, &ada).await.unwrap()
    else {
        panic!("expected a change");
    };
    assert_eq!(
        (b2.title.as_str(), b2.notes.as_str(), b2.done),
        ("b2", "notes", false)
    );

    // A task is only reachable through its own room.
    assert!(matches!(
        store.find_task(second.id, a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        each.delete_task(second.id, a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        each.update_task(second.id, a.id, &toggle(true, 1), &ada)
            .await,
        Err(StoreError::NotFound)
    ));

    // Delete and clear completed.
    let counts = each.delete_task(first.id, c.id).await.unwrap();
    assert_eq!(counts, RoomCounts { open: 1, done: 1 });
    each.update_task(first.id, b.id, &toggle(true, 1), &ada)
        .await
        .unwrap();
    let (removed, counts) = each.clear_completed(first.id).await.unwrap();
    assert_eq!(removed, vec![a.id, b.id]);
    assert_eq!(counts, RoomCounts::default());
    // A room without tasks still reads as itself.
    let (room, tasks) = store.room_with_tasks(first.id).await.unwrap();
    assert_eq!(room, store.find_room(first.id).await.unwrap());
    assert!(tasks.is_empty());

    // Ids are never reused after a delete.
    let (d, _) = each
        .create_task(first.id, &new_task("d"), &ada, 3)
        .await
        .unwrap();
    assert!(d.id > c.id);

    // A change dropped before its commit leaves nothing behind, and the next change goes ahead.
    {
        let mut change = store.change_room(first.id).await.unwrap();
        change
            .create_task(&new_task("never kept"), &ada, 3)
            .await
            .unwrap();
        change
            .rename(&RoomName::parse("Never").unwrap())
            .await
            .unwrap();
    }
    let titles: Vec<_> = store
        .room_with_tasks(first.id)
        .await
        .unwrap()
        .1
        .into_iter()
        .map(|t| t.title)
        .collect();
    assert_eq!(titles, vec!["d"]);
    assert_eq!(store.find_room(first.id).await.unwrap().name, "Renamed");
    each.create_task(first.id, &new_task("e"), &ada, 3)
        .await
        .unwrap();

    // Unknown rooms.
    let missing = tasksync::models::RoomId(i64::MAX);
    assert!(matches!(
        store.find_room(missing).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.room_with_tasks(missing).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        each.create_task(missing, &new_task("x"), &ada, 3).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        each.clear_completed(missing).await,
        Err(StoreError::NotFound)
    ));
    store.ping().await.unwrap();
}

#[tokio::test]
async fn the_store_story_holds_on_sqlite() {
    the_store_story(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_store_story_holds_on_postgres() {
    the_store_story(Backend::Postgres).await;
}

async fn concurrent_creates_never_exceed_the_room_limit(backend: Backend) {
    let (store, _db) = store(backend).await;
    let room = store
        .create_room(&RoomName::parse("Busy").unwrap())
        .await
        .unwrap();
    let ada = DisplayName::parse("Ada").unwrap();
    let attempts = (0..20).map(|i| {
        let store = store.clone();
        let ada = ada.clone();
        async move {
            OneChange(&store)
                .create_task(room.id, &new_task(&format!("t{i}")), &ada, 5)
                .await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 5, "{results:?}");
    assert_eq!(store.room_with_tasks(room.id).await.unwrap().1.len(), 5);
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_room_limit_on_sqlite() {
    concurrent_creates_never_exceed_the_room_limit(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_room_limit_on_postgres() {
    concurrent_creates_never_exceed_the_room_limit(Backend::Postgres).await;
}
