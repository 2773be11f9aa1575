//! The single-process adapter: publishing is handing the envelope straight to our own inbox.

use super::{Envelope, Inbox, PublishError};

#[derive(Clone)]
pub struct InProcess {
    inbox: Inbox,
}

impl InProcess {
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }

    pub async fn publish(&self, envelope: Envelope) -> Result<(), PublishError> {
        self.inbox
            .send(envelope)
            .await
            .map_err(|_| PublishError::Closed)
    }
}
