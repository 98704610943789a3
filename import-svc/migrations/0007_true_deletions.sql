-- Deletion detection by visibility, and incremental marks from when a sync started.
--
-- `seen_by` maps each connection that has seen a record in Clio to when it last did
-- (the database time of the transaction that stored the page). A listing that ends in a
-- sweep drops its own connection from the rows it did not see since it started; a record
-- is marked deleted only when no connection that saw it still does. So two syncs of one
-- account through different connections never delete each other's records, and a
-- connection whose Clio user sees fewer records never deletes what it cannot see.
-- `seen_in_job` is no longer read (kept: applied migrations are never edited).
--
-- Existing live rows are attributed to the connection that last stored them, as of then:
-- that connection's next full listing confirms or removes them. Deleted rows are seen by
-- no one.

ALTER TABLE contacts ADD COLUMN seen_by jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE matters ADD COLUMN seen_by jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE calendar_entries ADD COLUMN seen_by jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE activities ADD COLUMN seen_by jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE users ADD COLUMN seen_by jsonb NOT NULL DEFAULT '{}'::jsonb;

UPDATE contacts SET seen_by = jsonb_build_object(connection_id, stored_at) WHERE deleted_at IS NULL;
UPDATE matters SET seen_by = jsonb_build_object(connection_id, stored_at) WHERE deleted_at IS NULL;
UPDATE calendar_entries SET seen_by = jsonb_build_object(connection_id, stored_at) WHERE deleted_at IS NULL;
UPDATE activities SET seen_by = jsonb_build_object(connection_id, stored_at) WHERE deleted_at IS NULL;
UPDATE users SET seen_by = jsonb_build_object(connection_id, stored_at) WHERE deleted_at IS NULL;

-- The checkpoint keeps when its listings started, so a resumed job keeps them too:
-- `sweep_started_at` (database time) begins the listing whose end sweeps deletions (a full
-- sync's fetch, an incremental's id listing); `clio_started_at` is Clio's `Date` on the
-- first page of the fetch, where the connection's next incremental starts. Without a
-- `Date` from Clio the mark falls back to the newest `updated_at` seen (`max_updated_at`).
ALTER TABLE job_resources
    ADD COLUMN sweep_started_at timestamptz,
    ADD COLUMN clio_started_at timestamptz;
