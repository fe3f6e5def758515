-- Version 2: what the receiver's map page reads (/api/map*, hil/receiver/web.py), the same
-- tables as the SQLite store keeps. The receivers update assets and vehicles once per commit
-- (the newest row per device of everything the commit added), in (gw, device) order, so two
-- receivers never take these rows in opposite orders.

-- "last value of a device": which event is its newest by reading time (a backlog replayed
-- late does not overwrite it); not trackers: they are in vehicles. A reference, not a copy:
-- writing the asset block and data here again took a quarter of the server's CPU per event
-- (bench platform); the map reads them from the event by its primary key.
CREATE TABLE assets (
    gw text NOT NULL,
    device text NOT NULL,
    last_ts text NOT NULL,
    last_id text NOT NULL,
    PRIMARY KEY (gw, device)
) WITH (fillfactor = 50);  -- room on the page: an update of a device's row stays HOT

-- each tracker's newest position by the fix's time (a reference to it, as assets)
CREATE TABLE vehicles (
    gw text NOT NULL,
    device text NOT NULL,
    ts_ns bigint NOT NULL,
    last_id text NOT NULL,
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
