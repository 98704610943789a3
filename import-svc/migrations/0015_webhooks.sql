-- Near-real-time sync (import-svc/src/webhooks): one row per subscription at Clio, by
-- connection and resource. The path token in the callback URL is kept only as its
-- SHA-256; Clio's shared secret only sealed (AES-256-GCM under webhooks.secret_key, the
-- subscription id as associated data).
CREATE TABLE webhook_subscriptions (
    subscription_id uuid PRIMARY KEY,
    connection_id text NOT NULL,
    resource text NOT NULL,
    tenant text NOT NULL,
    clio_account_id text NOT NULL,
    principal text NOT NULL,
    path_token_sha256 bytea NOT NULL UNIQUE,
    clio_webhook_id bigint,
    secret_sealed bytea,
    status text NOT NULL CHECK (status IN ('pending', 'enabled', 'removed')),
    expires_at timestamptz,
    enabled_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz,
    last_delivery_at timestamptz,
    removed_at timestamptz,
    removed_reason text,
    deliveries_applied bigint NOT NULL DEFAULT 0,
    deliveries_refused bigint NOT NULL DEFAULT 0
);
-- One live subscription per connection and resource.
CREATE UNIQUE INDEX webhook_subscriptions_live ON webhook_subscriptions (connection_id, resource)
    WHERE status <> 'removed';

-- Deliveries applied, by the SHA-256 of their exact body: the same bytes again (a replay,
-- or Clio repeating itself) change nothing. Kept for webhooks.replay_window_secs.
CREATE TABLE webhook_deliveries_seen (
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions ON DELETE CASCADE,
    body_sha256 bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, body_sha256)
);
CREATE INDEX webhook_deliveries_seen_by_age ON webhook_deliveries_seen (received_at);
