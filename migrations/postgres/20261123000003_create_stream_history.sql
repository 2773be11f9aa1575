-- Cable stream history: every broadcast gets the next offset of its stream and is kept for a
-- while, so clients that missed it can be replayed it. The epoch names this history: clients
-- holding offsets from another one (a different database) are told to refresh instead.
CREATE TABLE tasksync_stream_epoch (
    epoch TEXT NOT NULL
);
INSERT INTO tasksync_stream_epoch (epoch) VALUES (md5(random()::text || clock_timestamp()::text));

CREATE TABLE tasksync_streams (
    stream      TEXT   PRIMARY KEY,
    last_offset BIGINT NOT NULL
);

CREATE TABLE tasksync_stream_messages (
    stream        TEXT        NOT NULL,
    stream_offset BIGINT      NOT NULL,
    payload       TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_offset)
);

CREATE INDEX tasksync_stream_messages_created_at ON tasksync_stream_messages (created_at);
