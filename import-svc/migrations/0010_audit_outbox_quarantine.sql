-- The audit outbox's quarantine (from crates/audit-outbox/sql/audit_outbox_quarantine.sql;
-- a producer copies this file into its own migrations unchanged, and a test checks the
-- copy).
--
-- Events audit-svc refused as invalid (INVALID_ARGUMENT, PERMISSION_DENIED for the event,
-- ALREADY_EXISTS with other content) are moved here by the relay, one at a time, with
-- audit-svc's answer, so the events behind them are delivered instead of waiting for ever.
-- Nothing is lost: someone reads `reason`, fixes the cause (a writer grant, a producer
-- bug) and moves the row back into audit_outbox. The count is exported as the metric
-- `<service>_audit_outbox_quarantined` and in GET /health/audit-outbox.
CREATE TABLE audit_outbox_quarantine (
    -- The row's seq in audit_outbox.
    seq            bigint PRIMARY KEY,
    event_id       uuid NOT NULL,
    kind           text NOT NULL,
    tenant         text NOT NULL,
    -- The protobuf encoding of clio_connect.common.v1.AuditEvent, as it was in the outbox.
    event          bytea NOT NULL,
    enqueued_at    timestamptz NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    -- audit-svc's status code and message.
    code           text NOT NULL,
    reason         text NOT NULL
);
