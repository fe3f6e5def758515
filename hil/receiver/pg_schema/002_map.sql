-- Version 2: what the receiver's map page reads (/api/map*, hil/receiver/web.py), the same
-- tables as the SQLite store keeps. The receivers update assets and vehicles once per commit
-- (the newest row per device of everything the commit added), in (gw, device) order, so two
-- receivers never take these rows in opposite orders.

-- "last value of a device": its asset block and newest event by reading time (a backlog
-- replayed late does not overwrite it); not trackers: they are in vehicles
CREATE TABLE assets (
    gw text NOT NULL,
    device text NOT NULL,
    code text,
    name text,
    class text,
    grid text,
    lat double precision,
    lon double precision,
    last_ts text NOT NULL,
    last_type text NOT NULL,
    last_data jsonb,
    PRIMARY KEY (gw, device)
) WITH (fillfactor = 50);  -- room on the page: an update of a device's row stays HOT

-- each tracker's newest position by the fix's time
CREATE TABLE vehicles (
    gw text NOT NULL,
    device text NOT NULL,
    code text,
    name text,
    ts_ns bigint NOT NULL,
    lat double precision NOT NULL,
    lon double precision NOT NULL,
    speed_kmh double precision,
    course_deg double precision,
    PRIMARY KEY (gw, device)
) WITH (fillfactor = 50);

-- a tracker's day on the map: positions by (gw, device) and fix time in ns
ALTER TABLE positions ADD COLUMN ts_ns bigint;
ALTER TABLE positions ADD COLUMN course_deg double precision;
UPDATE positions SET ts_ns = (extract(epoch FROM ts_at) * 1e9)::bigint WHERE ts_at IS NOT NULL;
CREATE INDEX positions_device_track ON positions (gw, device, ts_ns);

-- a device's case history
CREATE INDEX cases_device ON cases (gw, device, case_no);
-- the newest work-coverage reports: partial, so the other events do not pay for it
CREATE INDEX events_work_coverage ON events (received_ns DESC) WHERE type = 'work_coverage';
