-- Self-healing projections. The projection tables are derived data: when one is dropped
-- or emptied, or they fall behind the log, the service (at start-up) and
-- `audit-svc rebuild-projections` recreate and refill them from the log.
--
-- From here on the projection schema is defined in one place only,
-- `audit_recreate_projection_tables()`: this migration replaces the tables 0003 created and
-- 0004 altered with its output, and the repair path calls the same function, so a
-- recreated table can never differ from a migrated one.
--
-- How staleness is detected (see src/projections.rs):
-- * a table is missing: `audit_missing_projection_tables()`;
-- * `projection_state` has no row: any TRUNCATE or DELETE on a projection table removes
--   it (trigger below), because the service itself only ever inserts and updates;
-- * `projection_state.version` differs from the code's;
-- * `projection_heads` (the last sequence of each tenant's chain the projections applied,
--   moved by every append in its own transaction) differs from the log's last sequences.

-- Every table the projections consist of.
CREATE FUNCTION audit_projection_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['projection_state', 'proj_apps', 'proj_connections', 'proj_offboardings',
                 'proj_write_approvals', 'proj_writes', 'proj_review_items', 'proj_reviews',
                 'projection_heads']
$$;

CREATE FUNCTION audit_missing_projection_tables() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT t FROM unnest(audit_projection_tables()) AS t WHERE to_regclass(t) IS NULL
$$;

-- Emptying a projection table outside a rebuild makes the projections untrustworthy:
-- forget that they were ever built, so the next start-up rebuilds them.
CREATE FUNCTION audit_projections_emptied() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM projection_state;
    RETURN NULL;
END
$$;

-- Drops whatever is left of the projection tables and creates all of them empty. All of
-- them, not only the missing ones: a dropped `proj_reviews` takes the foreign key of
-- `proj_review_items` with it, and the data is rebuilt from the log anyway. Needs the
-- rights of the login that runs migrations (it owns the tables); `audit_appender` only
-- gets the grants at the end.
CREATE FUNCTION audit_recreate_projection_tables() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY audit_projection_tables() LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', t);
    END LOOP;

    -- Which projection code built these tables; no row: never built, or emptied since.
    CREATE TABLE projection_state (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        version integer NOT NULL,
        rebuilt_at timestamptz NOT NULL
    );

    -- Per tenant, the last sequence of its chain applied to the projections.
    CREATE TABLE projection_heads (
        tenant text PRIMARY KEY,
        sequence bigint NOT NULL
    );

    -- App registrations as their events last declared them.
    CREATE TABLE proj_apps (
        tenant text NOT NULL,
        app_id text NOT NULL,
        region text NOT NULL,
        declared_scopes text[] NOT NULL,
        risk_tier text NOT NULL,
        status text NOT NULL,
        PRIMARY KEY (tenant, app_id)
    );

    -- Connections: the current grant, last use, and how (and whether) it was revoked.
    CREATE TABLE proj_connections (
        tenant text NOT NULL,
        connection_id text NOT NULL,
        app_id text NOT NULL DEFAULT '',
        principal text NOT NULL DEFAULT '',
        clio_user_id text NOT NULL DEFAULT '',
        clio_account_id text NOT NULL DEFAULT '',
        region text NOT NULL DEFAULT '',
        scopes text[] NOT NULL DEFAULT '{}',
        risk_tier text NOT NULL DEFAULT 'low',
        -- The latest grant or reconnect (grant age and idle time count from it).
        granted_at timestamptz,
        first_granted_at timestamptz,
        last_used_at timestamptz,
        revoked_at timestamptz,
        revoked_by text,
        -- Clio's answer to the latest revocation attempt, and when it came.
        clio_outcome text,
        clio_outcome_at timestamptz,
        PRIMARY KEY (tenant, connection_id)
    );
    CREATE INDEX proj_connections_by_principal ON proj_connections (tenant, principal);
    CREATE INDEX proj_connections_by_app ON proj_connections (tenant, app_id);

    CREATE TABLE proj_offboardings (
        tenant text NOT NULL,
        sequence bigint NOT NULL,
        principal text NOT NULL,
        offboarded_at timestamptz NOT NULL,
        PRIMARY KEY (tenant, sequence)
    );

    CREATE TABLE proj_write_approvals (
        tenant text NOT NULL,
        sequence bigint NOT NULL,
        connection_id text NOT NULL,
        approval_id text NOT NULL,
        approved_at timestamptz NOT NULL,
        PRIMARY KEY (tenant, sequence)
    );
    CREATE INDEX proj_write_approvals_by_id
        ON proj_write_approvals (tenant, connection_id, approval_id);

    CREATE TABLE proj_writes (
        tenant text NOT NULL,
        sequence bigint NOT NULL,
        connection_id text NOT NULL,
        approval_id text NOT NULL,
        performed_at timestamptz NOT NULL,
        PRIMARY KEY (tenant, sequence)
    );
    CREATE INDEX proj_writes_by_connection ON proj_writes (tenant, connection_id);

    -- Quarterly reviews: the snapshot taken at generation and each reviewer's latest
    -- decision.
    CREATE TABLE proj_reviews (
        review_id uuid PRIMARY KEY,
        tenant text NOT NULL,
        year integer NOT NULL,
        quarter integer NOT NULL,
        generated_at timestamptz NOT NULL,
        generated_by text NOT NULL,
        CONSTRAINT proj_reviews_one_per_quarter UNIQUE (tenant, year, quarter)
    );

    -- A review item is the connection as it was when the review was generated.
    CREATE TABLE proj_review_items (
        review_id uuid NOT NULL REFERENCES proj_reviews (review_id) ON DELETE CASCADE,
        connection_id text NOT NULL,
        grant_age_days integer NOT NULL,
        decision text,
        reviewer text,
        note text,
        decided_at timestamptz,
        app_id text NOT NULL DEFAULT '',
        principal text NOT NULL DEFAULT '',
        clio_user_id text NOT NULL DEFAULT '',
        clio_account_id text NOT NULL DEFAULT '',
        region text NOT NULL DEFAULT '',
        scopes text[] NOT NULL DEFAULT '{}',
        granted_at timestamptz,
        last_used_at timestamptz,
        PRIMARY KEY (review_id, connection_id)
    );

    FOREACH t IN ARRAY audit_projection_tables() LOOP
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format(
            'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON %I TO audit_appender', t);
        IF t <> 'projection_state' THEN
            EXECUTE format(
                'CREATE TRIGGER %I AFTER TRUNCATE OR DELETE ON %I '
                'FOR EACH STATEMENT EXECUTE FUNCTION audit_projections_emptied()',
                t || '_emptied', t);
        END IF;
    END LOOP;
END
$$;

-- Empties every projection and replays the whole log, tenant by tenant, recording each
-- tenant's replayed head. Returns the number of events replayed. The loop's query fixes
-- how far each chain is replayed, so the heads recorded are exactly what was applied even
-- while appends run (an append waiting on the truncated tables projects its own events,
-- and moves its head, after the rebuild commits).
DROP FUNCTION audit_rebuild_projections();
CREATE FUNCTION audit_rebuild_projections() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    replayed bigint := 0;
BEGIN
    -- `projection_heads` last: an append moves its head after projecting, so it holds
    -- that lock only once it holds (or never needs) the others.
    TRUNCATE proj_apps, proj_connections, proj_offboardings, proj_write_approvals,
             proj_writes, proj_review_items, proj_reviews, projection_heads;
    FOR t IN SELECT tenant, max(sequence) AS last FROM events GROUP BY tenant ORDER BY tenant LOOP
        PERFORM audit_project(t.tenant, 1, t.last);
        INSERT INTO projection_heads (tenant, sequence) VALUES (t.tenant, t.last);
        replayed := replayed + t.last;
    END LOOP;
    RETURN replayed;
END
$$;

-- Replace the tables of 0003/0004 with the function's (same shape). They are empty and
-- without a `projection_state` row now, so the next start-up rebuilds them.
SELECT audit_recreate_projection_tables();

GRANT EXECUTE ON FUNCTION audit_rebuild_projections(), audit_projection_tables(),
    audit_missing_projection_tables()
    TO audit_appender;
