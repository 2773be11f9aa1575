//! The write lane: a thread of its own that runs every change to a room, from taking the room's
//! lock to committing it.
//!
//! A change is several statements in one transaction, and between two statements the task that
//! runs it waits for the database. On an HTTP worker that task then queues behind every other
//! request the worker is serving (rendering room pages, say) before it can send the next
//! statement, and all that while it holds the room's lock, or with SQLite the one write lock:
//! under load the lock is held mostly by waiting, and every other change waits too. On the
//! lane nothing else competes, so a change holds its lock for about as long as the database
//! takes. Handlers hand the lane the whole change and await its result.
//!
//! On SQLite the lane's thread also runs the statements themselves (`store::sqlite_writer`):
//! they block it while they run, which is what the lane is for; only changes wait behind them.

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::{runtime, sync::oneshot};

use crate::error::AppError;

#[derive(Clone)]
pub struct WriteLane {
    handle: runtime::Handle,
    /// Dropping the last clone drops the sender, which ends the lane's thread.
    _stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl WriteLane {
    /// Starts the lane's thread; it ends once every clone is dropped.
    pub fn start() -> std::io::Result<Self> {
        let lane = runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = lane.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tasksync-writes".into())
            .spawn(move || {
                lane.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            _stop: Arc::new(Mutex::new(Some(stop))),
        })
    }

    /// Runs `change` on the lane and hands back its outcome. The change starts on the lane at
    /// once, whether or not the outcome is awaited; the future returned holds only the task's
    /// handle, not the change, so an action that awaits it stays small.
    pub fn run<T, F>(&self, change: F) -> impl Future<Output = Result<T, AppError>> + use<T, F>
    where
        F: Future<Output = Result<T, AppError>> + Send + 'static,
        T: Send + 'static,
    {
        let task = self.handle.spawn(change);
        async move {
            task.await.map_err(|err| {
                AppError::internal(format!("a change on the write lane failed: {err}"))
            })?
        }
    }
}
