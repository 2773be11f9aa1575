-- Rooms and their tasks. Identity columns never reuse ids, so a DOM id such as task_42 always
-- means the same task, even in a stream replayed after a delete.
CREATE TABLE rooms (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 80),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id      BIGINT      NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    title        TEXT        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    notes        TEXT        NOT NULL DEFAULT '' CHECK (char_length(notes) <= 10000),
    done         BOOLEAN     NOT NULL DEFAULT FALSE,
    lock_version BIGINT      NOT NULL DEFAULT 0,
    updated_by   TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX tasks_room_id_id ON tasks (room_id, id);
