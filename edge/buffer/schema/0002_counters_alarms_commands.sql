-- counters that must survive restarts (drops, dead letters, corrupt stores replaced)
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);

-- active alarms: a restart keeps their alarm_id so the clear closes the same case
CREATE TABLE active_alarms (
    alarm_key TEXT PRIMARY KEY,   -- device:kind
    alarm_id TEXT NOT NULL,
    raised_ns INTEGER NOT NULL,
    detail TEXT NOT NULL           -- JSON: the raise's alarm block
);

-- downlink command journal: received -> executing -> done | failed | rejected
CREATE TABLE commands (
    cmd_id TEXT PRIMARY KEY,
    kid TEXT NOT NULL,
    ctr INTEGER NOT NULL,
    action TEXT NOT NULL,
    device TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    received_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE command_counters (kid TEXT PRIMARY KEY, ctr INTEGER NOT NULL);
