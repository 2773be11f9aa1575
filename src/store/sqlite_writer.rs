//! SQLite's one writing connection, driven by rusqlite on the thread of whoever holds it.
//!
//! sqlx runs every SQLite connection on a thread of its own and hands each statement to it and
//! the result back: two thread switches a statement, five statements a change, all while the
//! change holds the database's one write lock. On a busy machine those switches were most of a
//! change's time (README, Performance). The writes are short and local, so here they run where
//! the change runs, on the write lane's thread, and the lock is held only for the work itself.
//! Reads stay on sqlx's pool: WAL lets them run beside the writer.
//!
//! Statements block their thread while they run; call these only from the write lane (or tests).
//!
//! Checkpoints (copying the write-ahead log back into the database file, with an fsync of each)
//! would also run on the lane: SQLite runs one in whichever connection commits once the log
//! passes 1,000 pages, several times a second under load. They run instead on a thread of their
//! own, with a connection of its own, soon after commits ([`checkpoints`]); the writer keeps
//! SQLite's own as a backstop for a log that grows far past that.

use std::{
    path::Path,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::Duration,
};

use rusqlite::{CachedStatement, Connection, OpenFlags, Row, ToSql};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::StoreError;
use crate::models::{LockVersion, Room, RoomCounts, RoomId, Task, TaskId};

/// Statements kept prepared on the connection; the store has about a dozen.
const STATEMENTS_CACHED: usize = 32;

/// The names of the parameters a statement may take, in order (the most any takes is 7), so
/// binding allocates nothing.
const PARAMETER_NAMES: [&str; 9] = ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9"];

/// How long the checkpoint thread lets commits gather before it checkpoints them: at most four
/// checkpoints (and their fsyncs) a second however fast changes come.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(250);

/// The log length (4 KiB pages) at which the writer checkpoints by itself, should the
/// checkpoint thread fall that far behind (SQLite's default is 1,000). About 64 MiB.
const BACKSTOP_PAGES: i64 = 16_384;

/// The writing connection, one holder at a time. Waiting holders queue in order (tokio's mutex
/// is fair) instead of in SQLite's busy handler, which sleeps.
#[derive(Clone)]
pub struct SqliteWriter {
    conn: Arc<Mutex<Writing>>,
}

/// What a holder of the writer holds.
struct Writing {
    conn: Connection,
    /// Tells the checkpoint thread that a commit added to the log; dropping it ends the thread.
    committed: SyncSender<()>,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter").finish_non_exhaustive()
    }
}

impl SqliteWriter {
    /// Opens `path`, which must exist (sqlx's pool creates it and runs the migrations first),
    /// and starts its checkpoint thread, which ends when the last clone of the writer is dropped.
    pub fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<Self> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(busy_timeout)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(conn)
        };
        let conn = open()?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
        let checkpointer = open()?;
        let (committed, commits) = sync_channel(1);
        std::thread::Builder::new()
            .name("tasksync-checkpoint".into())
            .spawn(move || checkpoints(&checkpointer, &commits, CHECKPOINT_AFTER))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Writing { conn, committed })),
        })
    }

    /// Waits for the connection and opens an immediate transaction on it (taking the write lock
    /// now, not at the first write). Dropping the transaction rolls it back.
    pub async fn begin(&self) -> Result<SqliteTx, StoreError> {
        let writing = self.conn.clone().lock_owned().await;
        writing.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(SqliteTx {
            writing,
            open: true,
        })
    }

    /// Whether nobody holds the connection right now (for the pool metrics).
    pub fn is_idle(&self) -> bool {
        self.conn.try_lock().is_ok()
    }
}

/// Checkpoints the log on `conn` a moment after commits, until every sender of `commits` is
/// gone. PASSIVE: it copies what no reader still needs and waits for nobody, so the writer
/// carries on meanwhile.
fn checkpoints(conn: &Connection, commits: &Receiver<()>, after: Duration) {
    while commits.recv().is_ok() {
        std::thread::sleep(after);
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match done {
            Ok((log, copied)) => tracing::trace!(log, copied, "checkpointed the write-ahead log"),
            Err(err) => tracing::warn!(error = %err, "cannot checkpoint the write-ahead log"),
        }
    }
}

/// One transaction on the writing connection.
pub struct SqliteTx {
    writing: OwnedMutexGuard<Writing>,
    open: bool,
}

impl std::fmt::Debug for SqliteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTx")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl SqliteTx {
    /// `sql`, prepared once per connection, with `args` bound to `$1`, `$2`, ... The store's
    /// statements number their parameters as PostgreSQL does, and to SQLite `$3` is a name,
    /// not a position (it numbers parameters in the order they first appear), so each is bound
    /// by its name.
    fn statement(&self, sql: &str, args: &[&dyn ToSql]) -> Result<CachedStatement<'_>, StoreError> {
        let mut statement = self.writing.conn.prepare_cached(sql)?;
        if statement.parameter_count() != args.len() {
            return Err(StoreError::Database(
                format!(
                    "a statement takes {} parameters and was given {}",
                    statement.parameter_count(),
                    args.len()
                )
                .into(),
            ));
        }
        if args.len() > PARAMETER_NAMES.len() {
            return Err(StoreError::Database(
                format!("a statement was given {} parameters", args.len()).into(),
            ));
        }
        for (name, arg) in PARAMETER_NAMES.iter().zip(args) {
            let index = statement
                .parameter_index(name)?
                .ok_or_else(|| rusqlite::Error::InvalidParameterName((*name).to_owned()))?;
            statement.raw_bind_parameter(index, arg)?;
        }
        Ok(statement)
    }

    /// The first row `sql` returns, if any.
    pub fn row<T: FromSqliteRow>(
        &mut self,
        sql: &str,
        args: &[&dyn ToSql],
    ) -> Result<Option<T>, StoreError> {
        let mut statement = self.statement(sql, args)?;
        let mut rows = statement.raw_query();
        Ok(rows.next()?.map(T::from_row).transpose()?)
    }

    /// Every row `sql` returns.
    pub fn rows<T: FromSqliteRow>(
        &mut self,
        sql: &str,
        args: &[&dyn ToSql],
    ) -> Result<Vec<T>, StoreError> {
        let mut statement = self.statement(sql, args)?;
        let mut rows = statement.raw_query();
        let mut all = Vec::new();
        while let Some(row) = rows.next()? {
            all.push(T::from_row(row)?);
        }
        Ok(all)
    }

    /// Runs `sql`; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, args: &[&dyn ToSql]) -> Result<u64, StoreError> {
        let changed = self.statement(sql, args)?.raw_execute()?;
        Ok(changed as u64)
    }

    pub fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        self.writing.conn.execute_batch("COMMIT")?;
        // One pending signal is enough: the checkpoint thread takes whatever the log holds.
        if let Err(TrySendError::Disconnected(())) = self.writing.committed.try_send(()) {
            tracing::warn!("the checkpoint thread has stopped; SQLite's own checkpoints remain");
        }
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // A failed statement may have ended the transaction already; then there is nothing to
        // roll back and SQLite says so, which is fine.
        if self.open {
            let _ = self.writing.conn.execute_batch("ROLLBACK");
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::{Error as E, ErrorCode};
        match &err {
            // Another process holds the write lock for longer than the busy timeout, or the
            // disk is full or failing: worth retrying later.
            E::SqliteFailure(failure, _)
                if matches!(
                    failure.code,
                    ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::DiskFull
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::CannotOpen
                ) =>
            {
                StoreError::Unavailable(err.into())
            }
            _ => StoreError::Database(err.into()),
        }
    }
}

/// A value read from a row by column name, as sqlx's `FromRow` does on the reading side.
pub trait FromSqliteRow: Sized {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self>;
}

impl FromSqliteRow for Task {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Task {
            id: TaskId(row.get("id")?),
            room_id: RoomId(row.get("room_id")?),
            title: row.get("title")?,
            notes: row.get("notes")?,
            done: row.get("done")?,
            lock_version: LockVersion(row.get("lock_version")?),
            updated_by: row.get("updated_by")?,
        })
    }
}

impl FromSqliteRow for Room {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Room {
            id: RoomId(row.get("id")?),
            name: row.get("name")?,
        })
    }
}

impl FromSqliteRow for RoomCounts {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RoomCounts {
            open: row.get("open")?,
            done: row.get("done")?,
        })
    }
}

impl FromSqliteRow for TaskId {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(TaskId(row.get(0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer() -> (SqliteWriter, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sqlite3");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (a TEXT, b TEXT, c INTEGER)")
            .unwrap();
        (
            SqliteWriter::open(&path, Duration::from_millis(50)).unwrap(),
            dir,
        )
    }

    /// SQLite is built without its memory statistics (`LIBSQLITE3_FLAGS` in
    /// `.cargo/config.toml`): kept, they put every allocation SQLite makes behind one
    /// process-wide mutex. Their counter then stays at zero whatever SQLite holds.
    #[test]
    fn sqlite_keeps_no_memory_statistics() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE blobs (b BLOB); INSERT INTO blobs VALUES (randomblob(100000));",
        )
        .unwrap();
        // SAFETY: reads a counter; SQLite allows it from any thread at any time.
        let counted = unsafe { rusqlite::ffi::sqlite3_memory_used() };
        assert_eq!(
            counted, 0,
            "SQLite counts its memory: built without -DSQLITE_DEFAULT_MEMSTATUS=0?"
        );
        drop(conn);
    }

    struct Abc(String, String, i64);

    impl FromSqliteRow for Abc {
        fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
            Ok(Abc(row.get("a")?, row.get("b")?, row.get("c")?))
        }
    }

    #[tokio::test]
    async fn arguments_bind_by_number_whatever_order_the_statement_names_them_in() {
        let (writer, _dir) = writer().await;
        let mut tx = writer.begin().await.unwrap();
        let row: Abc = tx
            .row(
                "INSERT INTO t (c, b, a) VALUES ($3, $2, $1) RETURNING a, b, c",
                &[&"one", &"two", &3],
            )
            .unwrap()
            .unwrap();
        assert_eq!((row.0.as_str(), row.1.as_str(), row.2), ("one", "two", 3));
        // A number used twice is one parameter.
        let changed = tx
            .execute("UPDATE t SET a = $1, b = $1 WHERE c = $2", &[&"same", &3])
            .unwrap();
        assert_eq!(changed, 1);
        tx.commit().unwrap();
        let mut tx = writer.begin().await.unwrap();
        let all: Vec<Abc> = tx.rows("SELECT a, b, c FROM t", &[]).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0.as_str(), all[0].1.as_str()), ("same", "same"));
    }

    #[tokio::test]
    async fn a_wrong_number_of_arguments_is_an_error_not_a_null() {
        let (writer, _dir) = writer().await;
        let mut tx = writer.begin().await.unwrap();
        let short = tx.execute("INSERT INTO t (a, b) VALUES ($1, $2)", &[&"x"]);
        assert!(matches!(short, Err(StoreError::Database(_))), "{short:?}");
        let long = tx.execute("INSERT INTO t (a) VALUES ($1)", &[&"x", &"y"]);
        assert!(matches!(long, Err(StoreError::Database(_))), "{long:?}");
        let ten: Vec<&dyn ToSql> = vec![&1; 10];
        let too_many = tx.execute(
            "INSERT INTO t (c) VALUES ($1 + $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 + $10)",
            &ten,
        );
        assert!(
            matches!(too_many, Err(StoreError::Database(_))),
            "{too_many:?}"
        );
        let none: Vec<Abc> = tx.rows("SELECT a, b, c FROM t", &[]).unwrap();
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_and_frees_the_connection() {
        let (writer, _dir) = writer().await;
        {
            let mut tx = writer.begin().await.unwrap();
            tx.execute("INSERT INTO t (a) VALUES ($1)", &[&"gone"])
                .unwrap();
            assert!(!writer.is_idle());
        }
        assert!(writer.is_idle());
        let mut tx = writer.begin().await.unwrap();
        let rows: Vec<Abc> = tx.rows("SELECT a, b, c FROM t", &[]).unwrap();
        assert!(rows.is_empty());
    }

    #[tokio::test]
    async fn commits_reach_the_database_file_without_the_writer_checkpointing() {
        let (writer, dir) = writer().await;
        let file = dir.path().join("w.sqlite3");
        let before = std::fs::metadata(&file).unwrap().len();
        let mut tx = writer.begin().await.unwrap();
        tx.execute("INSERT INTO t (a) VALUES ($1)", &[&"x".repeat(200_000)])
            .unwrap();
        tx.commit().unwrap();
        // The 49 pages are far below the writer's own threshold: only the checkpoint thread
        // copies them from the log into the file, while the writer stays open.
        let grown = async {
            while std::fs::metadata(&file).unwrap().len() < before + 150_000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), grown)
            .await
            .expect("the log was never checkpointed into the database file");
        assert!(writer.is_idle());
    }

    #[tokio::test]
    async fn another_process_holding_the_lock_past_the_timeout_is_unavailable() {
        let (writer, dir) = writer().await;
        let other = Connection::open(dir.path().join("w.sqlite3")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let busy = writer.begin().await;
        assert!(matches!(busy, Err(StoreError::Unavailable(_))), "{busy:?}");
        other.execute_batch("ROLLBACK").unwrap();
        // The failed BEGIN left nothing open: the connection works again.
        writer.begin().await.unwrap().commit().unwrap();
    }
}
