-- Billing suggestions: unbilled calendar time, written to Clio as a time entry only after a
-- person approves it. A suggestion keeps only what the time entry needs (never the
-- calendar entry itself: no attendees, location or description).
CREATE TABLE suggestions (
    suggestion_id     uuid PRIMARY KEY,
    connection_id     text NOT NULL,
    tenant            text NOT NULL,
    clio_account_id   text NOT NULL,
    -- The connection's owner when the suggestion was made (who may review it).
    owner             text NOT NULL,
    calendar_entry_id text NOT NULL,
    matter_id         bigint NOT NULL,
    user_id           bigint NOT NULL,
    entry_date        date NOT NULL,
    quantity_secs     bigint NOT NULL CHECK (quantity_secs > 0),
    description       text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'written', 'rejected', 'failed', 'cancelled')),
    created_at        timestamptz NOT NULL,
    created_by        text NOT NULL,
    decided_by        text,
    decided_at        timestamptz,
    rejection_reason  text,
    clio_activity_id  bigint,
    error             text,
    -- A writer's hold on an approved suggestion (database time): nobody else writes it
    -- before then. After a write Clio did not answer, the next attempt waits until then
    -- and looks for the entry first.
    write_claimed_until timestamptz,
    write_attempts    integer NOT NULL DEFAULT 0,
    -- One suggestion per calendar entry of an account, whatever became of it: an entry
    -- rejected once is not suggested again.
    UNIQUE (clio_account_id, calendar_entry_id)
);

CREATE INDEX suggestions_by_connection ON suggestions (connection_id, status, suggestion_id);
CREATE INDEX suggestions_by_owner ON suggestions (owner, suggestion_id);
-- What the background writer and the revocation sweep look at.
CREATE INDEX suggestions_open ON suggestions (status, connection_id)
    WHERE status IN ('pending', 'approved');
