-- Imported records, one table per resource, keyed by (Clio account, Clio id).
-- The record is kept whole as Clio returned it (data); typed columns carry what upserts,
-- deletion detection and retention need. `seen_in_job` is the last job that saw the record
-- in Clio: a full sync marks rows it did not see as deleted.

CREATE TABLE contacts (
    clio_account_id text NOT NULL,
    clio_id         bigint NOT NULL,
    etag            text,
    updated_at      timestamptz,
    data            jsonb NOT NULL,
    connection_id   text NOT NULL,
    seen_in_job     uuid,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (clio_account_id, clio_id)
);
CREATE INDEX contacts_by_updated ON contacts (clio_account_id, updated_at);
CREATE INDEX contacts_by_stored ON contacts (stored_at);

CREATE TABLE matters (
    clio_account_id text NOT NULL,
    clio_id         bigint NOT NULL,
    etag            text,
    updated_at      timestamptz,
    data            jsonb NOT NULL,
    connection_id   text NOT NULL,
    seen_in_job     uuid,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (clio_account_id, clio_id)
);
CREATE INDEX matters_by_updated ON matters (clio_account_id, updated_at);
CREATE INDEX matters_by_stored ON matters (stored_at);

CREATE TABLE calendar_entries (
    clio_account_id text NOT NULL,
    clio_id         text NOT NULL,
    etag            text,
    updated_at      timestamptz,
    data            jsonb NOT NULL,
    connection_id   text NOT NULL,
    seen_in_job     uuid,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (clio_account_id, clio_id)
);
CREATE INDEX calendar_entries_by_updated ON calendar_entries (clio_account_id, updated_at);
CREATE INDEX calendar_entries_by_stored ON calendar_entries (stored_at);

CREATE TABLE activities (
    clio_account_id text NOT NULL,
    clio_id         bigint NOT NULL,
    etag            text,
    updated_at      timestamptz,
    data            jsonb NOT NULL,
    connection_id   text NOT NULL,
    seen_in_job     uuid,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (clio_account_id, clio_id)
);
CREATE INDEX activities_by_updated ON activities (clio_account_id, updated_at);
CREATE INDEX activities_by_stored ON activities (stored_at);

CREATE TABLE users (
    clio_account_id text NOT NULL,
    clio_id         bigint NOT NULL,
    etag            text,
    updated_at      timestamptz,
    data            jsonb NOT NULL,
    connection_id   text NOT NULL,
    seen_in_job     uuid,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (clio_account_id, clio_id)
);
CREATE INDEX users_by_updated ON users (clio_account_id, updated_at);
CREATE INDEX users_by_stored ON users (stored_at);
