-- The audit outbox's trace context (from crates/audit-outbox/sql/audit_outbox_trace_context.sql;
-- a producer copies this file into its own migrations unchanged, and a test checks the
-- copy).
--
-- The W3C `traceparent` of the work that enqueued the event (an RPC, an import job), when
-- that work was traced. The relay sends it beside the event, so audit-svc records the event
-- inside the same distributed trace. Diagnostic only: it is not part of the event, audit-svc
-- neither stores nor hashes it, and a row without one is delivered all the same.
ALTER TABLE audit_outbox ADD COLUMN traceparent text;
