-- Who submitted a job through SubmitJob: the verified caller credential (the audit actor).
-- `requested_by` stays what the caller says it acts for. Null for jobs a producer put on
-- the queue directly (the broker's login is their only credential).
ALTER TABLE jobs ADD COLUMN submitted_by text;

-- Data readers limited to tenants: an account's tenant is known from its jobs.
CREATE INDEX jobs_by_account ON jobs (clio_account_id) WHERE clio_account_id IS NOT NULL;
