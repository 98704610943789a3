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
