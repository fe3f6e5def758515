-- Each queued row says its event type, so retention by type (positions are personal data with
-- their own, shorter retention) tests a column instead of searching the JSON (issue 13).
-- Rows queued before this file get it from their payload once; a payload that is not JSON
-- (it cannot be, but a migration must not fail on one) stays NULL and keeps its prio's rule.
ALTER TABLE events ADD COLUMN event_type TEXT;
ALTER TABLE dead_letters ADD COLUMN event_type TEXT;
UPDATE events SET event_type = json_extract(CAST(payload AS TEXT), '$.type')
    WHERE json_valid(CAST(payload AS TEXT));
UPDATE dead_letters SET event_type = json_extract(CAST(payload AS TEXT), '$.type')
    WHERE json_valid(CAST(payload AS TEXT));
