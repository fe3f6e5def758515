-- events waiting for the platform's acknowledgement.
-- AUTOINCREMENT is deliberate: a plain rowid may reuse the highest seq after a delete, which
-- would break de-duplication upstream (design/reliability.md §1).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prio INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    boot_id TEXT,            -- set while the clock was unsynced: re-stamp from mono_ms
    mono_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL    -- the event's compact JSON, seq included
);
CREATE INDEX events_prio_seq ON events (prio, seq);

CREATE TABLE dead_letters (
    seq INTEGER PRIMARY KEY,
    prio INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_ns INTEGER NOT NULL,
    payload BLOB NOT NULL
);

CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
