-- LOCAL DEMO ONLY (deploy/compose.yaml): the databases and logins that
-- deploy/local/ensure-deps.sh creates for the local stack, made once when the compose
-- Postgres volume is new (the image runs /docker-entrypoint-initdb.d/*.sql as postgres).
-- No passwords: the compose Postgres trusts every connection from the compose network.
--
-- auth-svc and import-svc log in as postgres here (deploy/local/config); audit-svc uses
-- two logins (audit-svc/README.md, "Database logins"): the owner runs the migrations,
-- the service login owns nothing and works as audit_appender.
CREATE DATABASE clio_auth;
CREATE DATABASE clio_import;

CREATE ROLE audit_appender NOLOGIN;
CREATE ROLE clio_audit_owner LOGIN;
CREATE ROLE clio_audit_service LOGIN NOINHERIT;
GRANT audit_appender TO clio_audit_owner;
GRANT audit_appender TO clio_audit_service;
CREATE DATABASE clio_audit OWNER clio_audit_owner;
