-- One person's authorization of one app, and the tokens Clio issued for it.
CREATE TABLE connections (
    connection_id          uuid PRIMARY KEY,
    tenant                 text NOT NULL,
    app_id                 uuid NOT NULL REFERENCES app_registrations (app_id),
    principal              text NOT NULL,
    region                 text NOT NULL CHECK (region IN ('us', 'eu', 'ca', 'au')),
    clio_user_id           text NOT NULL,
    clio_user_name         text NOT NULL,
    clio_user_email        text NOT NULL,
    clio_account_id        text NOT NULL,
    clio_account_name      text NOT NULL,
    -- ["contacts:read", ...]: the app's declared set the person approved.
    granted_scopes         jsonb NOT NULL,
    granted_scopes_version integer NOT NULL,
    status                 text NOT NULL CHECK (status IN ('active', 'needs_reconnect', 'revoked')),
    -- Ciphertexts (token_vault), NULL once revoked or when the grant died at Clio.
    access_token_ct        bytea,
    access_token_key_id    text,
    refresh_token_ct       bytea,
    refresh_token_key_id   text,
    access_expires_at      timestamptz,
    -- Clio's expires_in at the last issue: the proactive refresh margin is a share of it.
    token_lifetime_secs    bigint,
    -- Bumped on every token change, so a forced refresh can tell whether someone else
    -- already refreshed after it looked.
    token_version          bigint NOT NULL DEFAULT 0,
    refreshed_at           timestamptz,
    granted_at             timestamptz NOT NULL,
    reconnected_at         timestamptz,
    last_used_at           timestamptz,
    revoked_at             timestamptz,
    revoked_by             text,
    revocation_reason      text,
    CHECK (status <> 'active' OR (access_token_ct IS NOT NULL AND refresh_token_ct IS NOT NULL))
);

-- One live connection per person, app and Clio user: connecting again replaces it.
CREATE UNIQUE INDEX connections_live ON connections (app_id, principal, clio_user_id)
    WHERE status <> 'revoked';
CREATE INDEX connections_principal ON connections (principal, tenant);
CREATE INDEX connections_expiry ON connections (access_expires_at) WHERE status = 'active';

-- A started authorization. Only the SHA-256 of the state is kept.
CREATE TABLE authorization_states (
    id                      uuid PRIMARY KEY,
    state_hash              bytea NOT NULL UNIQUE,
    app_id                  uuid NOT NULL REFERENCES app_registrations (app_id),
    principal               text NOT NULL,
    mode                    text NOT NULL CHECK (mode IN ('web', 'out_of_band')),
    -- Sent again, byte for byte, at the code exchange.
    redirect_uri            text NOT NULL,
    scopes_version          integer NOT NULL,
    reconnect_connection_id uuid REFERENCES connections (connection_id),
    pkce_verifier_ct        bytea,
    pkce_verifier_key_id    text,
    created_at              timestamptz NOT NULL,
    expires_at              timestamptz NOT NULL,
    used_at                 timestamptz,
    outcome                 text
);

CREATE INDEX authorization_states_expiry ON authorization_states (expires_at);

-- Tokens of revoked connections, kept (encrypted) only until Clio confirms the
-- deauthorize, so a failed call can be retried.
CREATE TABLE pending_deauthorizations (
    connection_id         uuid PRIMARY KEY REFERENCES connections (connection_id),
    region                text NOT NULL,
    app_id                uuid NOT NULL REFERENCES app_registrations (app_id),
    access_token_ct       bytea NOT NULL,
    access_token_key_id   text NOT NULL,
    refresh_token_ct      bytea,
    refresh_token_key_id  text,
    -- The CONNECTION_REVOKED event is written once Clio's first answer is known; if the
    -- process died before that, the retry worker writes it.
    revoke_event_recorded boolean NOT NULL DEFAULT false,
    revoked_by            text NOT NULL,
    revocation_reason     text NOT NULL,
    revoked_at            timestamptz NOT NULL,
    attempts              integer NOT NULL DEFAULT 0,
    next_attempt_at       timestamptz NOT NULL,
    last_error            text
);

-- Which configured data key encrypts new secrets; changed by RotateEncryptionKey.
CREATE TABLE encryption_key_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    active_key_id text NOT NULL,
    rotated_by    text NOT NULL,
    rotated_at    timestamptz NOT NULL
);
