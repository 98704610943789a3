-- Refreshing without holding a row lock or a pooled connection across the call to Clio:
-- a replica claims a connection's refresh (until `refresh_claimed_until`, judged by the
-- database's clock), calls Clio with no transaction open, and writes the new tokens in
-- their own commit, releasing the claim. A claim left by a crashed replica simply expires.
ALTER TABLE connections
    ADD COLUMN refresh_claim          uuid,
    ADD COLUMN refresh_claimed_until  timestamptz,
    -- Proactive refreshes that keep failing back off exponentially, so a crowd of
    -- failing connections never takes every pass from the rest.
    ADD COLUMN refresh_failures       integer NOT NULL DEFAULT 0,
    ADD COLUMN next_refresh_attempt_at timestamptz,
    ADD COLUMN last_refresh_error     text;

-- Secrets a key rotation found it cannot decrypt (wrong key, tampered, moved to another
-- row): set aside with what was found, reported once (metric and audit event), and
-- skipped by later batches so the rotation finishes everything else. A row rewritten
-- under another key (a reconnect) is no longer matched by its entry.
CREATE TABLE undecryptable_secrets (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    row_id      uuid NOT NULL,
    key_id      text NOT NULL,
    problem     text NOT NULL,
    found_at    timestamptz NOT NULL,
    PRIMARY KEY (table_name, column_name, row_id, key_id)
);
