-- Import jobs, their per-resource checkpoints, and each connection's high-water marks.

CREATE TABLE jobs (
    job_id          uuid PRIMARY KEY,
    connection_id   text NOT NULL,
    clio_account_id text,
    resources       text[] NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('full', 'incremental')),
    updated_since   timestamptz,
    filters         jsonb NOT NULL DEFAULT '{}'::jsonb,
    fields          jsonb NOT NULL DEFAULT '{}'::jsonb,
    requested_by    text NOT NULL DEFAULT '',
    status          text NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'dead_lettered')),
    failure_reason  text,
    attempts        integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    -- Milliseconds spent waiting for Clio's rate limit, for progress reports.
    rate_limit_wait_ms bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_by_connection ON jobs (connection_id, created_at DESC);
CREATE INDEX jobs_by_status ON jobs (status, created_at DESC);

-- The checkpoint: committed in the same transaction as each page's records, so a crash or
-- redelivery resumes from `next_url` with exact counts.
CREATE TABLE job_resources (
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    resource        text NOT NULL,
    -- fetch: paging through records; reconcile: listing ids to find deletions; done.
    phase           text NOT NULL DEFAULT 'fetch' CHECK (phase IN ('fetch', 'reconcile', 'done')),
    next_url        text,
    pages           bigint NOT NULL DEFAULT 0,
    records_fetched bigint NOT NULL DEFAULT 0,
    records_written bigint NOT NULL DEFAULT 0,
    records_deleted bigint NOT NULL DEFAULT 0,
    -- Clio's total for the query when it reports one (meta.records), for the ETA.
    records_total   bigint,
    max_updated_at  timestamptz,
    PRIMARY KEY (job_id, resource)
);

-- Where the next incremental import of a connection's resource starts.
CREATE TABLE sync_marks (
    connection_id   text NOT NULL,
    resource        text NOT NULL,
    high_water      timestamptz NOT NULL,
    job_id          uuid NOT NULL,
    PRIMARY KEY (connection_id, resource)
);
