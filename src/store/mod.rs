//! The only code that speaks SQL. One `Store` fronts either SQLite (the embedded default) or
//! PostgreSQL; each statement is written once and runs on both, because the schema keeps to the
//! SQL the two share (`$n` parameters, `RETURNING`, aggregate `FILTER`). The backend is picked
//! once, from the database URL, when the app starts.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    PgConnection, PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::models::{
    DisplayName, NewTask, Room, RoomCounts, RoomId, RoomName, RoomSummary, Task, TaskChanges,
    TaskId,
};

/// The rooms index shows at most this many rooms, newest first.
const ROOMS_LISTED: i64 = 500;

/// What a store call can fail with, beyond infrastructure trouble.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the room already holds {0} tasks")]
    RoomFull(i64),
    /// The database cannot be reached right now; worth retrying later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::RowNotFound => StoreError::NotFound,
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(err)
            }
            // PostgreSQL's connection-exception (08) and operator-intervention (57) classes:
            // the server went away or is shutting down.
            E::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(err)
            }
            _ => StoreError::Database(err),
        }
    }
}

/// How a task update ended.
#[derive(Debug)]
pub enum Updated {
    /// The change was applied.
    Changed(Task, RoomCounts),
    /// The task already looked like that (a repeated toggle): nothing was written.
    Unchanged(Task, RoomCounts),
    /// The task changed since the client last saw it, and not into what the client wants:
    /// nothing was written; here is how it looks now.
    Conflict(Box<Task>),
}

/// The application's database.
#[derive(Clone, Debug)]
pub enum Store {
    /// SQLite allows one writer at a time. Reads share a pool (WAL lets them run beside the
    /// writer); writes go through a pool of one connection, so writers wait their turn in the
    /// app, in order and without sleeping, rather than in SQLite's busy handler, which backs
    /// off in sleeps of up to 100 ms and so turns contention into long tail latencies.
    Sqlite {
        reads: SqlitePool,
        writes: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool this store reads through. Each arm is
/// compiled for its own backend, so one body of SQL serves both.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite { reads: $pool, .. } => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// [`with_pool!`] for statements that write.
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite { writes: $pool, .. } => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// How a store's connection pools stand, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: usize,
    pub max: u32,
}

/// A transaction on either backend.
enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the connection of whichever transaction `$tx` holds, as
/// `with_pool!` does for pools.
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// The columns a `Task` is read from, as a literal so statements stay `&'static str`.
macro_rules! task_columns {
    () => {
        "id, room_id, title, notes, done, lock_version, updated_by"
    };
}

const COUNTS: &str = "SELECT COUNT(*) FILTER (WHERE NOT done) AS open, \
                             COUNT(*) FILTER (WHERE done) AS done \
                      FROM tasks WHERE room_id = $1";

const SELECT_TASK: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE room_id = $1 AND id = $2"
);

/// Takes the room's row lock (PostgreSQL) or the write lock (SQLite) for the rest of the
/// transaction, so limits and counts read afterwards cannot race another writer, and reads the
/// room. No row means the room does not exist.
const TOUCH_ROOM: &str =
    "UPDATE rooms SET updated_at = CURRENT_TIMESTAMP WHERE id = $1 RETURNING id, name";

impl Store {
    /// Connects to `url` (`sqlite:` or `postgres:`), creating a SQLite file and its folder if
    /// needed, and brings the schema up to date.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let store = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(pool_size)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("invalid SQLite URL {url}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| *d != Path::new(""))
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let pool = |size| {
                SqlitePoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(Duration::from_secs(5))
                    // A file in this process cannot drop the connection the way a server can,
                    // and the check is a round trip to the connection's thread on every
                    // acquire, in the one writer's turn too.
                    .test_before_acquire(false)
                    .connect_with(options.clone())
            };
            let writes = pool(1)
                .await
                .with_context(|| format!("cannot open SQLite database {url}"))?;
            let reads = pool(pool_size.max(1))
                .await
                .with_context(|| format!("cannot open SQLite database {url}"))?;
            Store::Sqlite { reads, writes }
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres:, got {}",
                redact(url)
            );
        };
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Store::Sqlite { writes, .. } => sqlx::migrate!("migrations/sqlite").run(writes).await,
            Store::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
    }

    /// Answers when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Closes every connection; used on shutdown.
    pub async fn close(&self) {
        match self {
            Store::Sqlite { reads, writes } => {
                reads.close().await;
                writes.close().await;
            }
            Store::Postgres(pool) => pool.close().await,
        }
    }

    /// Connections open, idle and allowed, over every pool.
    pub fn pool_stats(&self) -> PoolStats {
        let stats = |size: u32, idle: usize, max: u32| PoolStats {
            open: size,
            idle,
            max,
        };
        match self {
            Store::Sqlite { reads, writes } => stats(
                reads.size() + writes.size(),
                reads.num_idle() + writes.num_idle(),
                reads.options().get_max_connections() + writes.options().get_max_connections(),
            ),
            Store::Postgres(pool) => stats(
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
        }
    }

    pub async fn list_rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        const SQL: &str = "SELECT r.id, r.name, \
                                  COUNT(t.id) FILTER (WHERE NOT t.done) AS open, \
                                  COUNT(t.id) FILTER (WHERE t.done) AS done \
                           FROM rooms r LEFT JOIN tasks t ON t.room_id = r.id \
                           GROUP BY r.id, r.name ORDER BY r.id DESC LIMIT $1";
        Ok(with_pool!(self, pool => {
            sqlx::query_as(SQL).bind(ROOMS_LISTED).fetch_all(pool).await
        })?)
    }

    pub async fn create_room(&self, name: &RoomName) -> Result<Room, StoreError> {
        const SQL: &str = "INSERT INTO rooms (name) VALUES ($1) RETURNING id, name";
        Ok(with_writer!(self, pool => {
            sqlx::query_as(SQL).bind(name.as_str()).fetch_one(pool).await
        })?)
    }

    pub async fn find_room(&self, id: RoomId) -> Result<Room, StoreError> {
        const SQL: &str = "SELECT id, name FROM rooms WHERE id = $1";
        Ok(with_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_one(pool).await)?)
    }

    /// A room's tasks in the order they were added.
    pub async fn list_tasks(&self, room: RoomId) -> Result<Vec<Task>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE room_id = $1 ORDER BY id"
        );
        Ok(with_pool!(self, pool => sqlx::query_as(SQL).bind(room).fetch_all(pool).await)?)
    }

    pub async fn find_task(&self, room: RoomId, id: TaskId) -> Result<Task, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(SELECT_TASK).bind(room).bind(id).fetch_one(pool).await
        })?)
    }

    /// Opens a change to `room`: a transaction that holds the room's row lock (SQLite: the
    /// database's write lock) until it commits, so the limits and counts read inside it cannot
    /// race another writer. Dropping the change rolls it back. `NotFound` if there is no such
    /// room.
    pub async fn change_room(&self, room: RoomId) -> Result<RoomChange, StoreError> {
        let mut tx = match self {
            Store::Sqlite { writes, .. } => Tx::Sqlite(writes.begin().await?),
            Store::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        };
        let touched: Option<Room> = with_tx!(&mut tx, conn => {
            sqlx::query_as(TOUCH_ROOM).bind(room).fetch_optional(&mut *conn).await?
        });
        let room = touched.ok_or(StoreError::NotFound)?;
        Ok(RoomChange { room, tx })
    }
}

/// One change to one room, in one transaction (see [`Store::change_room`]). The caller renders
/// what the change did while the transaction is still open, so the broadcast that announces it
/// can commit with it (see `Broadcaster::commit`).
pub struct RoomChange {
    /// The room as the change found it.
    room: Room,
    tx: Tx,
}

impl RoomChange {
    pub fn room(&self) -> &Room {
        &self.room
    }

    /// Adds a task unless the room already holds `max_tasks`.
    pub async fn create_task(
        &mut self,
        task: &NewTask,
        by: &DisplayName,
        max_tasks: i64,
    ) -> Result<(Task, RoomCounts), StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO tasks (room_id, title, notes, updated_by) VALUES ($1, $2, $3, $4) \
             RETURNING ",
            task_columns!()
        );
        let room = self.room.id;
        with_tx!(&mut self.tx, conn => {
            let before: RoomCounts =
                sqlx::query_as(COUNTS).bind(room).fetch_one(&mut *conn).await?;
            if before.total() >= max_tasks {
                return Err(StoreError::RoomFull(max_tasks));
            }
            let created: Task = sqlx::query_as(INSERT)
                .bind(room)
                .bind(task.title.as_str())
                .bind(task.notes.as_str())
                .bind(by.as_str())
                .fetch_one(&mut *conn)
                .await?;
            let counts = RoomCounts { open: before.open + 1, ..before };
            Ok((created, counts))
        })
    }

    /// Applies `changes` if the task still has the lock version the client saw. A stale version
    /// is a conflict, unless the task already looks the way the client wants it; either way
    /// nothing was written and the change should be dropped.
    pub async fn update_task(
        &mut self,
        id: TaskId,
        changes: &TaskChanges,
        by: &DisplayName,
    ) -> Result<Updated, StoreError> {
        const UPDATE: &str = concat!(
            "UPDATE tasks SET title = COALESCE($3, title), notes = COALESCE($4, notes), \
                              done = COALESCE($5, done), updated_by = $6, \
                              lock_version = lock_version + 1, updated_at = CURRENT_TIMESTAMP \
             WHERE room_id = $1 AND id = $2 AND lock_version = $7 \
             RETURNING ",
            task_columns!()
        );
        let room = self.room.id;
        with_tx!(&mut self.tx, conn => {
            let current: Task = sqlx::query_as(SELECT_TASK)
                .bind(room)
                .bind(id)
                .fetch_one(&mut *conn)
                .await?;
            if current.lock_version != changes.lock_version {
                let counts = sqlx::query_as(COUNTS).bind(room).fetch_one(&mut *conn).await?;
                return if changes.already_applied_to(&current) {
                    Ok(Updated::Unchanged(current, counts))
                } else {
                    Ok(Updated::Conflict(Box::new(current)))
                };
            }
            let updated: Task = sqlx::query_as(UPDATE)
                .bind(room)
                .bind(id)
                .bind(changes.title.as_ref().map(|t| t.as_str()))
                .bind(changes.notes.as_ref().map(|n| n.as_str()))
                .bind(changes.done)
                .bind(by.as_str())
                .bind(changes.lock_version)
                .fetch_one(&mut *conn)
                .await?;
            let counts = sqlx::query_as(COUNTS).bind(room).fetch_one(&mut *conn).await?;
            Ok(Updated::Changed(updated, counts))
        })
    }

    pub async fn delete_task(&mut self, id: TaskId) -> Result<RoomCounts, StoreError> {
        const SQL: &str = "DELETE FROM tasks WHERE room_id = $1 AND id = $2";
        let room = self.room.id;
        with_tx!(&mut self.tx, conn => {
            let deleted = sqlx::query(SQL).bind(room).bind(id).execute(&mut *conn).await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(sqlx::query_as(COUNTS).bind(room).fetch_one(&mut *conn).await?)
        })
    }

    /// Removes every done task in the room; returns the ids removed.
    pub async fn clear_completed(&mut self) -> Result<(Vec<TaskId>, RoomCounts), StoreError> {
        const SQL: &str = "DELETE FROM tasks WHERE room_id = $1 AND done RETURNING id";
        let room = self.room.id;
        with_tx!(&mut self.tx, conn => {
            let mut removed: Vec<TaskId> =
                sqlx::query_scalar(SQL).bind(room).fetch_all(&mut *conn).await?;
            let counts = sqlx::query_as(COUNTS).bind(room).fetch_one(&mut *conn).await?;
            removed.sort();
            Ok((removed, counts))
        })
    }

    pub async fn rename(&mut self, name: &RoomName) -> Result<Room, StoreError> {
        const SQL: &str = "UPDATE rooms SET name = $2 WHERE id = $1 RETURNING id, name";
        let room = self.room.id;
        with_tx!(&mut self.tx, conn => {
            Ok(sqlx::query_as(SQL).bind(room).bind(name.as_str()).fetch_one(&mut *conn).await?)
        })
    }

    /// The PostgreSQL connection the change runs on, so the LISTEN/NOTIFY adapter can record
    /// the broadcast that announces the change in the same transaction; `None` on SQLite.
    pub fn postgres(&mut self) -> Option<&mut PgConnection> {
        match &mut self.tx {
            Tx::Postgres(tx) => Some(&mut **tx),
            Tx::Sqlite(_) => None,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A database URL with any password replaced, fit for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/tasks"),
            "postgres://app:***@db:5432/tasks"
        );
        assert_eq!(redact("postgres://db/tasks"), "postgres://db/tasks");
        assert_eq!(redact("sqlite://storage/x.db"), "sqlite://storage/x.db");
    }
}
