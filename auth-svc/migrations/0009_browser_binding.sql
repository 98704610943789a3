-- The web flow is bound to the browser that opened it: the person is sent to auth-svc's
-- own /connect/start first, which sets a cookie (only its SHA-256 is stored here) and
-- redirects to Clio; the callback completes the flow only with that cookie.
ALTER TABLE authorization_states
    -- Clio's authorize URL without its `state` (the state itself is never stored).
    ADD COLUMN clio_authorize_url text,
    ADD COLUMN browser_binding_hash bytea,
    ADD COLUMN browser_bound_at timestamptz;
