-- Marks the database as import-svc's; later migrations add the service's tables.
CREATE TABLE service_info (
    service text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO service_info (service) VALUES ('import-svc');
