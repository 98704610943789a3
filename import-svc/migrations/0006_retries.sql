-- Jobs waiting out a dependency outage in a retry queue, and jobs the reconciler had to
-- publish again because their message was lost.
ALTER TABLE jobs
    -- When the job's message comes back from its retry queue (null: not waiting).
    ADD COLUMN next_attempt_at timestamptz,
    -- Retries spent on dependency outages, and the last outage's reason.
    ADD COLUMN retries integer NOT NULL DEFAULT 0,
    ADD COLUMN last_retry_reason text,
    -- Times the reconciler published the job again.
    ADD COLUMN republished integer NOT NULL DEFAULT 0;

-- The reconciler's scan: non-final jobs by age.
CREATE INDEX jobs_unfinished ON jobs (changed_at) WHERE status IN ('queued', 'running');
