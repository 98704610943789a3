-- Clio developer apps (one per region), each approved by compliance before use.
CREATE TABLE app_registrations (
    app_id               uuid PRIMARY KEY,
    tenant               text NOT NULL,
    name                 text NOT NULL,
    region               text NOT NULL CHECK (region IN ('us', 'eu', 'ca', 'au')),
    client_id            text NOT NULL,
    -- AES-256-GCM (token_vault): key id || nonce || ciphertext, bound to this row.
    client_secret_ct     bytea NOT NULL,
    client_secret_key_id text NOT NULL,
    redirect_uris        text[] NOT NULL,
    -- [{"scope": "contacts:read", "justification": "..."}]
    declared_scopes      jsonb NOT NULL,
    scopes_version       integer NOT NULL DEFAULT 1,
    status               text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'revoked')),
    pkce_enabled         boolean NOT NULL,
    registered_by        text NOT NULL,
    created_at           timestamptz NOT NULL,
    approved_by          text,
    approved_at          timestamptz,
    approval_note        text,
    revoked_by           text,
    revoked_at           timestamptz,
    revocation_reason    text,
    UNIQUE (region, client_id)
);

CREATE INDEX app_registrations_tenant ON app_registrations (tenant, app_id);

-- Every declared scope set an app has had, for reviews of what people consented to.
CREATE TABLE app_scope_versions (
    app_id          uuid NOT NULL REFERENCES app_registrations (app_id),
    scopes_version  integer NOT NULL,
    declared_scopes jsonb NOT NULL,
    changed_by      text NOT NULL,
    reason          text NOT NULL,
    changed_at      timestamptz NOT NULL,
    PRIMARY KEY (app_id, scopes_version)
);
