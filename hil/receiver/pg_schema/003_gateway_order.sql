-- A gateway's states carry an ordering key (contract 1.1.1 `order`, docs/decisions.md D70):
-- receivers on one shared subscription commit them in either order, so the row keeps the
-- newest, not the last written. NULL: an unordered state (an agent before 1.1.1).
ALTER TABLE gateways
    ADD COLUMN boot_id text,
    ADD COLUMN conn_ms bigint,
    ADD COLUMN state_n bigint,
    ADD COLUMN prev_boot text;
