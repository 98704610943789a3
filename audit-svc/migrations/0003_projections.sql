-- Compliance projections: derived from the event log, maintained in the same transaction
-- as each append, and rebuildable from the log at any time (`rebuild_projections`).
-- Nothing here is evidence; the service may rewrite these tables freely.

-- Which projection code built these tables; a service whose code has a newer version
-- rebuilds them from the log at start-up.
CREATE TABLE projection_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    version integer NOT NULL,
    rebuilt_at timestamptz NOT NULL
);

-- App registrations as their events last declared them.
CREATE TABLE proj_apps (
    tenant text NOT NULL,
    app_id text NOT NULL,
    region text NOT NULL,
    declared_scopes text[] NOT NULL,
    risk_tier text NOT NULL,
    full_account_access boolean NOT NULL,
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
    full_account_access boolean NOT NULL DEFAULT false,
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
CREATE INDEX proj_write_approvals_by_id ON proj_write_approvals (tenant, connection_id, approval_id);

CREATE TABLE proj_writes (
    tenant text NOT NULL,
    sequence bigint NOT NULL,
    connection_id text NOT NULL,
    approval_id text NOT NULL,
    performed_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, sequence)
);
CREATE INDEX proj_writes_by_connection ON proj_writes (tenant, connection_id);

-- Quarterly reviews: the snapshot taken at generation and each reviewer's latest decision.
CREATE TABLE proj_reviews (
    review_id uuid PRIMARY KEY,
    tenant text NOT NULL,
    year integer NOT NULL,
    quarter integer NOT NULL,
    generated_at timestamptz NOT NULL,
    generated_by text NOT NULL
);

CREATE TABLE proj_review_items (
    review_id uuid NOT NULL REFERENCES proj_reviews (review_id) ON DELETE CASCADE,
    connection_id text NOT NULL,
    -- The connection as it was at generation, in the ConnectionSummary shape (JSON).
    connection jsonb NOT NULL,
    grant_age_days integer NOT NULL,
    decision text,
    reviewer text,
    note text,
    decided_at timestamptz,
    PRIMARY KEY (review_id, connection_id)
);

GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON
    projection_state, proj_apps, proj_connections, proj_offboardings, proj_write_approvals,
    proj_writes, proj_reviews, proj_review_items
    TO audit_appender;
