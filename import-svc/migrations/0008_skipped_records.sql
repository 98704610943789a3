-- Clio records an import left out because Postgres cannot hold them as sent (a NUL in a
-- string, a lone UTF-16 surrogate, nesting deeper than the parser allows, a record over
-- importer.max_record_bytes) or refused them as bad data. The job completes with the rest;
-- each skipped record is listed here with why, and counted in its checkpoint.

CREATE TABLE skipped_records (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    resource        text NOT NULL,
    clio_account_id text NOT NULL,
    -- The record's id when it could be read (escaped and shortened: printable).
    clio_id         text,
    reason          text NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX skipped_records_by_job ON skipped_records (job_id, resource);

ALTER TABLE job_resources ADD COLUMN records_skipped bigint NOT NULL DEFAULT 0;
