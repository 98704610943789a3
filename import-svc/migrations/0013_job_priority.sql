-- Which waiting jobs a replica starts first (interactive, scheduled, backfill). Kept on
-- the job so GetJob shows it and the reconciler republishes a job with its priority.
ALTER TABLE jobs ADD COLUMN priority text NOT NULL DEFAULT 'scheduled'
    CHECK (priority IN ('interactive', 'scheduled', 'backfill'));
