-- Clio's per-app limit, shared by every replica (import-svc/src/app_budget.rs): the places
-- taken in each app's budget, one row per request sent, kept for one window.
CREATE TABLE app_budget_calls (
    app text NOT NULL,
    at timestamptz NOT NULL
);
CREATE INDEX app_budget_calls_by_app ON app_budget_calls (app, at);

-- Takes a place in `p_app`'s budget of `p_limit` requests in any `p_window_ms`: 0 when
-- taken, otherwise the milliseconds until the oldest place leaves the window. The app's
-- advisory lock (for this transaction) makes count-then-insert atomic across replicas.
CREATE FUNCTION app_budget_take(p_app text, p_limit int, p_window_ms bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    now_at timestamptz;
    since timestamptz;
    used int;
    oldest timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('app-budget:' || p_app, 0));
    -- Read after the lock: time spent waiting for it counts.
    now_at := clock_timestamp();
    since := now_at - make_interval(secs => p_window_ms / 1000.0);
    DELETE FROM app_budget_calls WHERE app = p_app AND at <= since;
    SELECT count(*), min(at) INTO used, oldest FROM app_budget_calls WHERE app = p_app;
    IF used < p_limit THEN
        INSERT INTO app_budget_calls (app, at) VALUES (p_app, now_at);
        RETURN 0;
    END IF;
    RETURN greatest(1, ceil(extract(epoch FROM (oldest - since)) * 1000))::bigint;
END
$$;
