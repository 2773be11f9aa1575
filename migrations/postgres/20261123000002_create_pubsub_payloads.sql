-- Pub/sub envelopes too big for a NOTIFY payload (8000 bytes). The publisher stores the encoded
-- envelope here and notifies its id; every listener reads the row back. Rows are only needed
-- for the moment it takes listeners to fetch them, so publishers delete those older than five
-- minutes; the table never grows past a few minutes of large broadcasts.
CREATE TABLE tasksync_pubsub_payloads (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The trim deletes by age.
CREATE INDEX tasksync_pubsub_payloads_created_at ON tasksync_pubsub_payloads (created_at);
