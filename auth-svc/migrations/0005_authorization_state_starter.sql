-- The service credential that started an authorization. CompleteAuthorization is answered
-- only for that caller, so another holder of the connector role cannot complete a flow it
-- did not start. NULL for states started before this column existed; those can no longer
-- be completed through CompleteAuthorization (they expire within the state TTL anyway).
ALTER TABLE authorization_states ADD COLUMN started_by text;
