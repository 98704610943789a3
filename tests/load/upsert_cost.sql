-- The cost of import-svc's page upsert against the competent script's, inside Postgres
-- (no client, no JSON parsing): 1,000 pages of 200 contacts into a fresh table of the
-- same shape, each statement as it is written in import-svc/src/records.rs and
-- tests/load/src/script.rs. Prints each one's time; "ours-nolateral" is import-svc's
-- without the count of records a page really changed.
--
--   psql -h 127.0.0.1 -U postgres -f tests/load/upsert_cost.sql

DROP DATABASE IF EXISTS sqlbench;
CREATE DATABASE sqlbench;
\c sqlbench
CREATE TABLE src AS SELECT g AS id, 'etag-'||g AS etag, now() - (g||' seconds')::interval AS updated_at,
  jsonb_build_object('id', g, 'etag', 'etag-'||g, 'name', 'Contact number '||g, 'first_name','First'||g, 'last_name','Last'||g,
    'type','Person','created_at', now()::text, 'updated_at', now()::text, 'email_addresses', jsonb_build_array(jsonb_build_object('address','c'||g||'@example.com','name','Work','primary',true)),
    'phone_numbers', jsonb_build_array(jsonb_build_object('number','+1 555 '||g,'name','Work','primary',true)), 'title','Dr', 'prefix','', 'company', jsonb_build_object('id', g%100, 'name','Co '||(g%100))) AS data
FROM generate_series(1,200000) g;
CREATE TABLE pages AS SELECT (id-1)/200 AS p, array_agg(id ORDER BY id) ids, array_agg(etag ORDER BY id) etags, array_agg(updated_at ORDER BY id) ups, array_agg(data ORDER BY id) datas FROM src GROUP BY 1;

CREATE OR REPLACE FUNCTION mk(t text) RETURNS void LANGUAGE plpgsql AS $f$ BEGIN
EXECUTE format('DROP TABLE IF EXISTS %I', t);
EXECUTE format($d$CREATE TABLE %I (clio_account_id text NOT NULL, clio_id bigint NOT NULL, etag text, updated_at timestamptz, data jsonb NOT NULL, connection_id text NOT NULL, seen_in_job uuid, stored_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz, seen_by jsonb NOT NULL DEFAULT '{}'::jsonb, PRIMARY KEY (clio_account_id, clio_id));
CREATE INDEX ON %I (clio_account_id, updated_at); CREATE INDEX ON %I (stored_at);$d$, t, t, t);
END $f$;
CREATE OR REPLACE FUNCTION run(t text, sql text) RETURNS interval LANGUAGE plpgsql AS $f$
DECLARE r record; s timestamptz; n bigint; BEGIN
PERFORM mk(t); s := clock_timestamp();
FOR r IN SELECT * FROM pages ORDER BY p LOOP
  EXECUTE replace(sql, 'TT', t) INTO n USING 'acct', 'conn', gen_random_uuid(), now(), r.ids, r.etags, r.ups, r.datas;
END LOOP;
RETURN clock_timestamp() - s; END $f$;

SELECT 'script', run('c_script', $q$ WITH x AS (INSERT INTO TT (clio_account_id, clio_id, etag, updated_at, data, connection_id)
SELECT $1, u.id, u.etag, u.updated_at, u.data, $1 FROM UNNEST($5::bigint[], $6::text[], $7::timestamptz[], $8::jsonb[]) AS u(id, etag, updated_at, data)
ON CONFLICT (clio_account_id, clio_id) DO UPDATE SET etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at, data = EXCLUDED.data, stored_at = now(), deleted_at = NULL
WHERE TT.updated_at IS NULL OR EXCLUDED.updated_at >= TT.updated_at RETURNING 1) SELECT count(*) FROM x $q$);
-- import-svc's page upsert (records.rs, upsert_sql), shared by both variants below: the
-- page's rows, and the INSERT keeping the newer version. NEWER is the version test.
CREATE OR REPLACE FUNCTION ours_page() RETURNS text LANGUAGE sql AS $f$ SELECT
$s$u AS (SELECT * FROM UNNEST($5::bigint[], $6::text[], $7::timestamptz[], $8::jsonb[]) AS u(id, etag, updated_at, data))$s$ $f$;
CREATE OR REPLACE FUNCTION ours_stored() RETURNS text LANGUAGE sql AS $f$ SELECT replace(
$s$stored AS (INSERT INTO TT (clio_account_id, clio_id, etag, updated_at, data, connection_id, seen_in_job, stored_at, deleted_at, seen_by)
 SELECT $1, u.id, u.etag, u.updated_at, u.data, $2, $3, $4, NULL, jsonb_build_object($2::text, now()) FROM u
 ON CONFLICT (clio_account_id, clio_id) DO UPDATE SET seen_in_job = EXCLUDED.seen_in_job, seen_by = TT.seen_by || EXCLUDED.seen_by, deleted_at = NULL, connection_id = EXCLUDED.connection_id,
 etag = CASE WHEN NEWER THEN EXCLUDED.etag ELSE TT.etag END,
 data = CASE WHEN NEWER THEN EXCLUDED.data ELSE TT.data END,
 stored_at = CASE WHEN NEWER THEN EXCLUDED.stored_at ELSE TT.stored_at END,
 updated_at = CASE WHEN NEWER THEN EXCLUDED.updated_at ELSE TT.updated_at END$s$,
'NEWER', '(TT.updated_at IS NULL OR EXCLUDED.updated_at IS NULL OR EXCLUDED.updated_at >= TT.updated_at)') $f$;

-- As import-svc runs it: `changed` counts the records the page really adds or changes.
SELECT 'ours', run('c_ours', 'WITH ' || ours_page() || $q$,
changed AS (SELECT count(*) AS n FROM u LEFT JOIN LATERAL (SELECT true AS found, TT.etag, TT.updated_at, TT.deleted_at FROM TT WHERE TT.clio_account_id = $1 AND TT.clio_id = u.id LIMIT 1) old ON true
 WHERE old.found IS NULL OR old.deleted_at IS NOT NULL OR ((u.etag IS DISTINCT FROM old.etag OR u.updated_at IS DISTINCT FROM old.updated_at) AND (old.updated_at IS NULL OR u.updated_at IS NULL OR u.updated_at >= old.updated_at))),
$q$ || ours_stored() || ') SELECT n FROM changed');
-- The same without that count: every row the statement touched.
SELECT 'ours-nolateral', run('c_ours2', 'WITH ' || ours_page() || ', ' || ours_stored()
    || ' RETURNING 1) SELECT count(*) FROM stored');

\c postgres
DROP DATABASE sqlbench;
