-- Lease usage, aggregated per connection and caller until the next flush. Each lease adds
-- to its row in the lease's own statement (before the token is handed out), so usage
-- survives a crash; the flusher turns the rows into TOKEN_LEASED events through the outbox
-- and deletes them in one transaction, so each use is reported exactly once.
CREATE TABLE lease_usage (
    connection_id uuid NOT NULL,
    caller        text NOT NULL,
    lease_count   bigint NOT NULL,
    first_used_at timestamptz NOT NULL,
    last_used_at  timestamptz NOT NULL,
    -- Distinct purposes (job ids), at most 20; beyond that only the count grows.
    purposes      text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (connection_id, caller)
);
