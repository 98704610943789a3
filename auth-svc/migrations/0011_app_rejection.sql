-- Compliance may refuse a registration (RejectApp) instead of approving it. A rejected app
-- takes no connection; revising its scopes makes it pending again.
ALTER TABLE app_registrations DROP CONSTRAINT app_registrations_status_check;
ALTER TABLE app_registrations ADD CONSTRAINT app_registrations_status_check
    CHECK (status IN ('pending_approval', 'approved', 'revoked', 'rejected'));
ALTER TABLE app_registrations
    ADD COLUMN rejected_by    text,
    ADD COLUMN rejected_at    timestamptz,
    ADD COLUMN rejection_note text;
