-- Events name the credential that wrote them (issue 12): `writer` is the verified caller
-- of `Record` (or of the ComplianceService call that recorded a review event; `audit-svc`
-- for the service's own denials), and it is inside the hashed canonical bytes.
--
-- Rows stored before this migration get the empty string, and the canonical form has no
-- `writer` key when it is empty, so their hashes still verify. Adding a column with a
-- constant default rewrites no row, so the append-only triggers are not involved.
ALTER TABLE events ADD COLUMN writer text NOT NULL DEFAULT '';

-- Which events a writer recorded (e.g. everything a credential wrote before its revocation).
CREATE INDEX events_by_writer ON events (tenant, writer, sequence);
