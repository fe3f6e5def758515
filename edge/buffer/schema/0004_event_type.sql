-- Each queued row says its event type, so retention by type (positions are personal data with
-- their own, shorter retention) tests a column instead of searching the JSON (issue 13).
-- No backfill: adding a column is O(1), rewriting every row of a full store is not (1 M rows:
-- 18 s and a WAL the size of the store, at start-up, D88). Rows queued before this file stay
-- NULL; prune reads their payload until they age out.
ALTER TABLE events ADD COLUMN event_type TEXT;
ALTER TABLE dead_letters ADD COLUMN event_type TEXT;
