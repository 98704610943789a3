-- The compliance projections are maintained by one SQL function, `audit_project`, that
-- applies a tenant's events in sequence order. The append path calls it for the events it
-- just inserted (same transaction); `audit_rebuild_projections` empties the projections and
-- replays the whole log through the same function, so "maintained" and "rebuilt" can never
-- disagree.
--
-- The function never casts producer-supplied payload values (a bad value would make an
-- append fail); it reads only the typed columns and text fields of the payload.
--
-- Risk tiers and "full account access" are computed by the service from the scopes with
-- the scope catalogue at report time, so these tables keep scopes, not derived flags.

ALTER TABLE proj_apps DROP COLUMN full_account_access;
ALTER TABLE proj_connections DROP COLUMN full_account_access;

-- A review item is the connection as it was when the review was generated.
ALTER TABLE proj_review_items
    DROP COLUMN connection,
    ADD COLUMN app_id text NOT NULL DEFAULT '',
    ADD COLUMN principal text NOT NULL DEFAULT '',
    ADD COLUMN clio_user_id text NOT NULL DEFAULT '',
    ADD COLUMN clio_account_id text NOT NULL DEFAULT '',
    ADD COLUMN region text NOT NULL DEFAULT '',
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN granted_at timestamptz,
    ADD COLUMN last_used_at timestamptz;

ALTER TABLE proj_reviews ADD CONSTRAINT proj_reviews_one_per_quarter UNIQUE (tenant, year, quarter);

CREATE FUNCTION audit_project(p_tenant text, p_from bigint, p_to bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    e events%ROWTYPE;
    conn text;
    app text;
    person text;
BEGIN
    FOR e IN
        SELECT * FROM events
        WHERE tenant = p_tenant AND sequence BETWEEN p_from AND p_to
        ORDER BY sequence
    LOOP
        conn := COALESCE(NULLIF(e.connection_id, ''),
                         CASE WHEN e.subject_kind = 'connection' THEN e.subject_id END);
        app := COALESCE(NULLIF(e.app_id, ''),
                        CASE WHEN e.subject_kind = 'app' THEN e.subject_id END);
        person := COALESCE(NULLIF(e.principal, ''),
                           CASE WHEN e.subject_kind = 'person' THEN e.subject_id END);

        CASE e.kind
        WHEN 'app_registered', 'app_scopes_changed' THEN
            IF app IS NOT NULL THEN
                INSERT INTO proj_apps (tenant, app_id, region, declared_scopes, risk_tier, status)
                VALUES (e.tenant, app, e.region, e.scopes, e.risk_tier, 'registered')
                ON CONFLICT (tenant, app_id) DO UPDATE
                    SET declared_scopes = EXCLUDED.declared_scopes,
                        risk_tier = EXCLUDED.risk_tier,
                        region = CASE WHEN EXCLUDED.region = '' THEN proj_apps.region
                                      ELSE EXCLUDED.region END;
            END IF;
        WHEN 'app_approved', 'app_revoked' THEN
            IF app IS NOT NULL THEN
                INSERT INTO proj_apps (tenant, app_id, region, declared_scopes, risk_tier, status)
                VALUES (e.tenant, app, e.region, e.scopes, e.risk_tier,
                        CASE e.kind WHEN 'app_approved' THEN 'approved' ELSE 'revoked' END)
                ON CONFLICT (tenant, app_id) DO UPDATE SET status = EXCLUDED.status;
            END IF;
        WHEN 'connection_granted', 'connection_reconnected' THEN
            IF conn IS NOT NULL THEN
                INSERT INTO proj_connections AS c (
                    tenant, connection_id, app_id, principal, clio_user_id, clio_account_id,
                    region, scopes, risk_tier, granted_at, first_granted_at)
                VALUES (e.tenant, conn, COALESCE(app, ''), COALESCE(person, ''),
                        e.clio_user_id, e.clio_account_id, e.region, e.scopes,
                        COALESCE(NULLIF(e.risk_tier, ''), 'low'), e.occurred_at, e.occurred_at)
                ON CONFLICT (tenant, connection_id) DO UPDATE SET
                    app_id = COALESCE(NULLIF(EXCLUDED.app_id, ''), c.app_id),
                    principal = COALESCE(NULLIF(EXCLUDED.principal, ''), c.principal),
                    clio_user_id = COALESCE(NULLIF(EXCLUDED.clio_user_id, ''), c.clio_user_id),
                    clio_account_id = COALESCE(NULLIF(EXCLUDED.clio_account_id, ''), c.clio_account_id),
                    region = COALESCE(NULLIF(EXCLUDED.region, ''), c.region),
                    scopes = EXCLUDED.scopes,
                    risk_tier = EXCLUDED.risk_tier,
                    granted_at = EXCLUDED.granted_at,
                    first_granted_at = COALESCE(c.first_granted_at, EXCLUDED.first_granted_at),
                    revoked_at = NULL,
                    revoked_by = NULL;
            END IF;
        WHEN 'connection_revoked' THEN
            IF conn IS NOT NULL THEN
                INSERT INTO proj_connections AS c (
                    tenant, connection_id, app_id, principal, clio_user_id, clio_account_id,
                    region, revoked_at, revoked_by, clio_outcome, clio_outcome_at)
                VALUES (e.tenant, conn, COALESCE(app, ''), COALESCE(person, ''),
                        e.clio_user_id, e.clio_account_id, e.region, e.occurred_at, e.actor_id,
                        COALESCE(e.payload ->> 'clio_outcome', ''), e.occurred_at)
                ON CONFLICT (tenant, connection_id) DO UPDATE SET
                    revoked_at = EXCLUDED.revoked_at,
                    revoked_by = EXCLUDED.revoked_by,
                    clio_outcome = EXCLUDED.clio_outcome,
                    clio_outcome_at = EXCLUDED.clio_outcome_at;
            END IF;
        WHEN 'revocation_retried' THEN
            UPDATE proj_connections
               SET clio_outcome = COALESCE(e.payload ->> 'clio_outcome', clio_outcome),
                   clio_outcome_at = e.occurred_at
             WHERE tenant = e.tenant AND connection_id = conn;
        WHEN 'token_leased' THEN
            -- Aggregated usage: the event occurs at the last use of its window.
            UPDATE proj_connections
               SET last_used_at = GREATEST(last_used_at, e.occurred_at)
             WHERE tenant = e.tenant AND connection_id = conn;
        WHEN 'user_offboarded' THEN
            IF person IS NOT NULL THEN
                INSERT INTO proj_offboardings (tenant, sequence, principal, offboarded_at)
                VALUES (e.tenant, e.sequence, person, e.occurred_at);
            END IF;
        WHEN 'write_approved' THEN
            IF conn IS NOT NULL THEN
                INSERT INTO proj_write_approvals (tenant, sequence, connection_id, approval_id, approved_at)
                VALUES (e.tenant, e.sequence, conn, COALESCE(e.payload ->> 'approval_id', ''), e.occurred_at);
            END IF;
        WHEN 'write_performed' THEN
            IF conn IS NOT NULL THEN
                INSERT INTO proj_writes (tenant, sequence, connection_id, approval_id, performed_at)
                VALUES (e.tenant, e.sequence, conn, COALESCE(e.payload ->> 'approval_id', ''), e.occurred_at);
            END IF;
        WHEN 'review_generated' THEN
            -- The items are the tenant's live connections at this point of its chain, so
            -- a replay reproduces exactly the snapshot taken when the review was generated.
            INSERT INTO proj_reviews (review_id, tenant, year, quarter, generated_at, generated_by)
            SELECT (e.payload ->> 'review_id')::uuid, e.tenant,
                   (e.payload ->> 'year')::integer, (e.payload ->> 'quarter')::integer,
                   e.occurred_at, e.actor_id
            -- Only the service writes this kind (GenerateQuarterlyReview refuses it in
            -- Record), so the payload's shape is known.
            WHERE e.source = 'audit-svc'
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                INSERT INTO proj_review_items (
                    review_id, connection_id, grant_age_days, app_id, principal, clio_user_id,
                    clio_account_id, region, scopes, granted_at, last_used_at)
                SELECT (e.payload ->> 'review_id')::uuid, c.connection_id,
                       GREATEST(0, floor(extract(epoch FROM e.occurred_at
                                - COALESCE(c.first_granted_at, c.granted_at, e.occurred_at)) / 86400))::integer,
                       c.app_id, c.principal, c.clio_user_id, c.clio_account_id, c.region,
                       c.scopes, c.granted_at, c.last_used_at
                  FROM proj_connections c
                 WHERE c.tenant = e.tenant AND c.revoked_at IS NULL AND c.granted_at IS NOT NULL;
            END IF;
        WHEN 'review_attested' THEN
            UPDATE proj_review_items i
               SET decision = e.payload ->> 'decision',
                   reviewer = e.actor_id,
                   note = COALESCE(e.payload ->> 'note', ''),
                   decided_at = e.occurred_at
              FROM proj_reviews r
             WHERE r.review_id = i.review_id
               AND r.tenant = e.tenant
               AND r.review_id::text = e.payload ->> 'review_id'
               AND i.connection_id = conn;
        ELSE
            NULL;
        END CASE;
    END LOOP;
END
$$;

-- Empties every projection and replays the whole log, tenant by tenant.
CREATE FUNCTION audit_rebuild_projections() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    TRUNCATE proj_apps, proj_connections, proj_offboardings, proj_write_approvals,
             proj_writes, proj_review_items, proj_reviews;
    FOR t IN SELECT tenant, max(sequence) AS last FROM events GROUP BY tenant ORDER BY tenant LOOP
        PERFORM audit_project(t.tenant, 1, t.last);
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION audit_project(text, bigint, bigint), audit_rebuild_projections()
    TO audit_appender;
