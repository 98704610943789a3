-- The append-only, hash-chained event log (one chain per tenant), its chain heads and the
-- signed checkpoints. See audit-svc/README.md for the canonical bytes the hashes cover.

-- The role the service works as on every pooled connection (`SET ROLE audit_appender`,
-- in the pool's after_connect). It may read and append events and checkpoints, and move
-- the chain heads, but never update or delete the log. Roles are cluster-wide, so
-- creation tolerates another database (or a concurrent migration) having made it.
DO $$
BEGIN
    CREATE ROLE audit_appender NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- A non-superuser service login must be a member to SET ROLE; a superuser already may.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'audit_appender', 'MEMBER') THEN
        EXECUTE format('GRANT audit_appender TO %I', current_user);
    END IF;
END
$$;

CREATE TABLE events (
    tenant text NOT NULL,
    -- Position in the tenant's chain, from 1, without gaps.
    sequence bigint NOT NULL CHECK (sequence > 0),
    -- The producer's idempotency key.
    event_id uuid NOT NULL UNIQUE,
    kind text NOT NULL,
    actor_kind text NOT NULL,
    actor_id text NOT NULL,
    subject_kind text NOT NULL,
    subject_id text NOT NULL,
    -- refs: empty string when they do not apply (the wire has no nulls either).
    connection_id text NOT NULL,
    app_id text NOT NULL,
    principal text NOT NULL,
    clio_user_id text NOT NULL,
    clio_account_id text NOT NULL,
    job_id text NOT NULL,
    region text NOT NULL,
    -- `<family>:<access>`, normalised and sorted by the scope catalogue.
    scopes text[] NOT NULL,
    risk_tier text NOT NULL,
    reason text NOT NULL,
    source text NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    PRIMARY KEY (tenant, sequence)
);

-- Query filters; every one ends in sequence so a page is an index range.
CREATE INDEX events_by_kind ON events (tenant, kind, sequence);
CREATE INDEX events_by_subject ON events (tenant, subject_kind, subject_id, sequence);
CREATE INDEX events_by_actor ON events (tenant, actor_id, sequence);
CREATE INDEX events_by_occurred ON events (tenant, occurred_at);

-- The last link of each chain. Appends lock their tenants' rows (in tenant order), so
-- appends serialise per tenant only. Not evidence: verification trusts events and
-- signed checkpoints, and only compares the head.
CREATE TABLE chain_heads (
    tenant text PRIMARY KEY,
    last_sequence bigint NOT NULL DEFAULT 0,
    last_hash text NOT NULL DEFAULT repeat('0', 64),
    checkpointed_sequence bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Ed25519 signatures over (tenant, sequence, head hash, signed_at, key id).
CREATE TABLE checkpoints (
    tenant text NOT NULL,
    sequence bigint NOT NULL,
    head_hash text NOT NULL,
    signed_at timestamptz NOT NULL,
    key_id text NOT NULL,
    -- base64 of the 64-byte signature.
    signature text NOT NULL,
    PRIMARY KEY (tenant, sequence)
);

-- Append-only in the schema: even the table owner cannot change or remove rows. An
-- attacker with superuser rights can still disable this; the hash chain and the signed
-- checkpoints are what reveal that.
CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

REVOKE ALL ON events, checkpoints, chain_heads FROM PUBLIC;
GRANT SELECT, INSERT ON events, checkpoints TO audit_appender;
GRANT SELECT, INSERT, UPDATE ON chain_heads TO audit_appender;
