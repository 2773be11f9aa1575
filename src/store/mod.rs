//! The only code that speaks SQL. One `Store` fronts either SQLite (the embedded default) or
//! PostgreSQL; each statement is written once and runs on both, because the schema keeps to the
//! SQL the two share (`$n` parameters, `RETURNING`, aggregate `FILTER`). The backend is picked
//! once, from the database URL, when the app starts. On SQLite, changes run through rusqlite on
//! the write lane's thread (`sqlite_writer`); everything else runs through sqlx.

mod known_rooms;
mod sqlite_writer;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    PgConnection, PgPool, Postgres, SqlitePool, Transaction,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use self::known_rooms::KnownRooms;
use self::sqlite_writer::{SqliteTx, SqliteWriter};
use crate::models::{
    DisplayName, LockVersion, NewTask, Room, RoomCounts, RoomId, RoomName, RoomSummary, Task,
    TaskChanges, TaskId,
};

/// The rooms index shows at most this many rooms, newest first.
const ROOMS_LISTED: i64 = 500;

/// How long a SQLite connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a store call can fail with, beyond infrastructure trouble.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the room already holds {0} tasks")]
    RoomFull(i64),
    /// The database cannot be reached right now; worth retrying later.
    #[error("the database is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("database error")]
    Database(#[source] BoxError),
}

/// The driver's error behind a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::RowNotFound => StoreError::NotFound,
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(err.into())
            }
            // PostgreSQL's connection-exception (08) and operator-intervention (57) classes:
            // the server went away or is shutting down.
            E::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(err.into())
            }
            _ => StoreError::Database(err.into()),
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
    /// writer); writes go through one connection, so writers wait their turn in the app, in
    /// order and without sleeping, rather than in SQLite's busy handler, which backs off in
    /// sleeps of up to 100 ms and so turns contention into long tail latencies.
    Sqlite {
        reads: SqlitePool,
        writer: SqliteWriter,
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

/// How a store's connection pools stand, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: usize,
    pub max: u32,
}

/// A transaction on either backend.
enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs one statement of a change in whichever transaction `$tx` holds, with the arguments
/// bound to `$1`, `$2`, ... in order, so each statement is written once for both backends:
/// `optional` gives the first row if there is one, `all` every row, `scalars` every row's one
/// column, `execute` how many rows it changed.
macro_rules! in_tx {
    ($tx:expr, optional $sql:expr $(, $arg:expr)*) => {
        match $tx {
            Tx::Sqlite(tx) => tx.row($sql, &[$(&$arg as &dyn rusqlite::ToSql),*]),
            Tx::Postgres(tx) => sqlx::query_as($sql)
                $(.bind($arg))*
                .fetch_optional(&mut **tx)
                .await
                .map_err(StoreError::from),
        }
    };
    ($tx:expr, one $sql:expr $(, $arg:expr)*) => {
        in_tx!($tx, optional $sql $(, $arg)*).and_then(|row| row.ok_or(StoreError::NotFound))
    };
    ($tx:expr, scalars $sql:expr $(, $arg:expr)*) => {
        match $tx {
            Tx::Sqlite(tx) => tx.rows($sql, &[$(&$arg as &dyn rusqlite::ToSql),*]),
            Tx::Postgres(tx) => sqlx::query_scalar($sql)
                $(.bind($arg))*
                .fetch_all(&mut **tx)
                .await
                .map_err(StoreError::from),
        }
    };
    ($tx:expr, execute $sql:expr $(, $arg:expr)*) => {
        match $tx {
            Tx::Sqlite(tx) => tx.execute($sql, &[$(&$arg as &dyn rusqlite::ToSql),*]),
            Tx::Postgres(tx) => sqlx::query($sql)
                $(.bind($arg))*
                .execute(&mut **tx)
                .await
                .map(|done| done.rows_affected())
                .map_err(StoreError::from),
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

/// A row of [`Store::room_with_tasks`]: the room's name, and one of its tasks, or none (every
/// task column NULL) for a room without tasks.
#[derive(sqlx::FromRow)]
struct RoomTaskRow {
    room_name: String,
    id: Option<TaskId>,
    room_id: Option<RoomId>,
    title: Option<String>,
    notes: Option<String>,
    done: Option<bool>,
    lock_version: Option<LockVersion>,
    updated_by: Option<String>,
}

impl RoomTaskRow {
    /// The row's task; `None` for the row of a room without tasks.
    fn into_task(self) -> Option<Result<Task, StoreError>> {
        let id = self.id?;
        let task = (|| {
            Some(Task {
                id,
                room_id: self.room_id?,
                title: self.title?,
                notes: self.notes?,
                done: self.done?,
                lock_version: self.lock_version?,
                updated_by: self.updated_by?,
            })
        })();
        // The columns are NOT NULL; a row of a LEFT JOIN has them all or none.
        Some(task.ok_or_else(|| StoreError::Database("a task row with a NULL column".into())))
    }
}

/// Takes the room's row lock (PostgreSQL) or the write lock (SQLite) for the rest of the
/// transaction, so limits and counts read afterwards cannot race another writer, and reads the
/// room. No row means the room does not exist.
const TOUCH_ROOM: &str =
    "UPDATE rooms SET updated_at = CURRENT_TIMESTAMP WHERE id = $1 RETURNING id, name";

impl Store {
    /// Connects to `url` (`sqlite:` or `postgres:`), creating a SQLite file and its folder if
    /// needed, and brings the schema up to date.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Self::connect_postgres(url, pool_size).await
        } else if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, pool_size).await
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite: or postgres:, got {}",
                redact(url)
            );
        }
    }

    async fn connect_postgres(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("cannot migrate the database")?;
        Ok(Store::Postgres(pool))
    }

    /// A pool of `pool_size` reading connections (sqlx), which also runs the migrations, and
    /// the one writing connection (rusqlite).
    async fn connect_sqlite(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // sqlx shares an in-memory database between its own connections only.
        if url.contains(":memory:") || url.contains("mode=memory") {
            anyhow::bail!(
                "an in-memory SQLite database cannot be shared by the app's connections; \
                 give DATABASE_URL a file, such as sqlite://storage/tasks.sqlite3"
            );
        }
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| *d != Path::new(""))
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let reads = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(5))
            // A file in this process cannot drop the connection the way a server can, and the
            // check is a round trip to the connection's thread on every acquire.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open SQLite database {url}"))?;
        sqlx::migrate!("migrations/sqlite")
            .run(&reads)
            .await
            .context("cannot migrate the database")?;
        let writer = SqliteWriter::open(options.get_filename(), BUSY_TIMEOUT)
            .with_context(|| format!("cannot open SQLite database {url} for writing"))?;
        Ok(Store::Sqlite { reads, writer })
    }

    /// Answers when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Closes every connection; used on shutdown.
    pub async fn close(&self) {
        match self {
            // The writer closes when its last holder lets go of it.
            Store::Sqlite { reads, .. } => reads.close().await,
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
            Store::Sqlite { reads, writer } => stats(
                reads.size() + 1,
                reads.num_idle() + usize::from(writer.is_idle()),
                reads.options().get_max_connections() + 1,
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
        let mut tx = self.begin().await?;
        let room = in_tx!(&mut tx, one SQL, name.as_str())?;
        tx.commit().await?;
        Ok(room)
    }

    pub async fn find_room(&self, id: RoomId) -> Result<Room, StoreError> {
        const SQL: &str = "SELECT id, name FROM rooms WHERE id = $1";
        Ok(with_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_one(pool).await)?)
    }

    /// A room and its tasks in the order they were added, read together: one query, so one
    /// trip to the database (with SQLite, one hand-off to a reading connection's thread) for a
    /// room page.
    pub async fn room_with_tasks(&self, id: RoomId) -> Result<(Room, Vec<Task>), StoreError> {
        const SQL: &str = concat!(
            "SELECT r.name AS room_name, t.* FROM rooms r LEFT JOIN (SELECT ",
            task_columns!(),
            " FROM tasks) t ON t.room_id = r.id WHERE r.id = $1 ORDER BY t.id"
        );
        let rows: Vec<RoomTaskRow> =
            with_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_all(pool).await)?;
        let Some(first) = rows.first() else {
            return Err(StoreError::NotFound);
        };
        let room = Room {
            id,
            name: first.room_name.clone(),
        };
        let tasks = rows
            .into_iter()
            .filter_map(RoomTaskRow::into_task)
            .collect::<Result<_, _>>()?;
        Ok((room, tasks))
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
        let mut tx = self.begin().await?;
        let room = in_tx!(&mut tx, one TOUCH_ROOM, room.0)?;
        Ok(RoomChange { room, tx })
    }

    /// A transaction on the writing connection (SQLite) or a pooled one (PostgreSQL). On SQLite
    /// it holds the write lock from the start, and its statements run on the caller's thread.
    async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Store::Sqlite { writer, .. } => Tx::Sqlite(writer.begin().await?),
            Store::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
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
        let room = self.room.id.0;
        let before: RoomCounts = in_tx!(&mut self.tx, one COUNTS, room)?;
        if before.total() >= max_tasks {
            return Err(StoreError::RoomFull(max_tasks));
        }
        let created = in_tx!(
            &mut self.tx,
            one INSERT,
            room,
            task.title.as_str(),
            task.notes.as_str(),
            by.as_str()
        )?;
        let counts = RoomCounts {
            open: before.open + 1,
            ..before
        };
        Ok((created, counts))
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
        let room = self.room.id.0;
        let current: Task = in_tx!(&mut self.tx, one SELECT_TASK, room, id.0)?;
        if current.lock_version != changes.lock_version {
            let counts = in_tx!(&mut self.tx, one COUNTS, room)?;
            return if changes.already_applied_to(&current) {
                Ok(Updated::Unchanged(current, counts))
            } else {
                Ok(Updated::Conflict(Box::new(current)))
            };
        }
        let updated = in_tx!(
            &mut self.tx,
            one UPDATE,
            room,
            id.0,
            changes.title.as_ref().map(|t| t.as_str()),
            changes.notes.as_ref().map(|n| n.as_str()),
            changes.done,
            by.as_str(),
            changes.lock_version.0
        )?;
        let counts = in_tx!(&mut self.tx, one COUNTS, room)?;
        Ok(Updated::Changed(updated, counts))
    }

    pub async fn delete_task(&mut self, id: TaskId) -> Result<RoomCounts, StoreError> {
        const SQL: &str = "DELETE FROM tasks WHERE room_id = $1 AND id = $2";
        let room = self.room.id.0;
        if in_tx!(&mut self.tx, execute SQL, room, id.0)? == 0 {
            return Err(StoreError::NotFound);
        }
        in_tx!(&mut self.tx, one COUNTS, room)
    }

    /// Removes every done task in the room; returns the ids removed.
    pub async fn clear_completed(&mut self) -> Result<(Vec<TaskId>, RoomCounts), StoreError> {
        const SQL: &str = "DELETE FROM tasks WHERE room_id = $1 AND done RETURNING id";
        let room = self.room.id.0;
        let mut removed: Vec<TaskId> = in_tx!(&mut self.tx, scalars SQL, room)?;
        let counts = in_tx!(&mut self.tx, one COUNTS, room)?;
        removed.sort();
        Ok((removed, counts))
    }

    pub async fn rename(&mut self, name: &RoomName) -> Result<Room, StoreError> {
        const SQL: &str = "UPDATE rooms SET name = $2 WHERE id = $1 RETURNING id, name";
        in_tx!(&mut self.tx, one SQL, self.room.id.0, name.as_str())
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
        self.tx.commit().await
    }
}

impl Tx {
    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit()?,
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
