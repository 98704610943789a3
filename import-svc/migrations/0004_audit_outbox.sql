-- The audit outbox (from crates/audit-outbox/sql/audit_outbox.sql; a producer copies this
-- file into its own migrations unchanged, and a test checks the copy).
--
-- A producer writes an AuditEvent here in the same transaction as the change it records,
-- so an event exists exactly when its change does; the relay delivers rows to audit-svc in
-- `seq` order and marks them delivered. `seq` order is commit order because enqueue holds
-- a transaction-scoped advisory lock from the insert to the commit.
CREATE TABLE audit_outbox (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    kind         text NOT NULL,
    tenant       text NOT NULL,
    -- The protobuf encoding of clio_connect.common.v1.AuditEvent. Never holds a secret.
    event        bytea NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

CREATE INDEX audit_outbox_pending ON audit_outbox (seq) WHERE delivered_at IS NULL;
CREATE INDEX audit_outbox_delivered ON audit_outbox (delivered_at) WHERE delivered_at IS NOT NULL;
