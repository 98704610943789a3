-- Two logins (issue 12). The login that runs these migrations owns every table and
-- function here; the service works through another login that owns nothing and is a
-- member of `audit_appender` (created NOINHERIT, so without `SET ROLE audit_appender` it
-- can do nothing at all). That login cannot UPDATE, DELETE or TRUNCATE the log (no
-- privilege), DROP or ALTER a table, or DISABLE a trigger (not the owner), or SET ROLE to
-- the owner (not a member). See audit-svc/README.md, "Database logins", for the roles a
-- database administrator creates once.
--
-- With a single login (local development, tests: the superuser `postgres`), nothing here
-- changes what it may do.

-- A service that does not migrate at start-up (`database.migrate_at_start = false`) checks
-- that the schema is the one it was built for; reading the migration history is all it
-- needs for that.
GRANT SELECT ON _sqlx_migrations TO audit_appender;

-- Only the owner creates objects: a service login that could create a table or function
-- in the log's schema could own something (e.g. shadow a function by name). PostgreSQL 15
-- already creates `public` like this; a database created by an older version does not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
