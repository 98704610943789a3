-- What audit events about a job need beyond the job itself: the firm (tenant) and region
-- of its connection, learnt from auth-svc when the job first runs, so an event recorded
-- later (a cancel through the API) lands in the firm's chain; and who cancelled it, why.
ALTER TABLE jobs
    ADD COLUMN tenant        text,
    ADD COLUMN region        integer,
    ADD COLUMN cancel_reason text,
    ADD COLUMN cancelled_by  text;
