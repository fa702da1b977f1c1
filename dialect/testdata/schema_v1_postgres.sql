-- Schema version 1 as the first release created it (PostgreSQL), kept as a
-- fixture for the migration tests. {{p}} is the table prefix; a line "--;"
-- ends each statement.
CREATE TABLE IF NOT EXISTS {{p}}journal (
	revision   BIGINT PRIMARY KEY,
	node_id    VARCHAR(64) NOT NULL,
	producer   VARCHAR(128) NOT NULL,
	payload    BYTEA NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now())
--;
CREATE TABLE IF NOT EXISTS {{p}}global_revision (
	id       SMALLINT PRIMARY KEY CHECK (id = 1),
	revision BIGINT NOT NULL)
--;
CREATE TABLE IF NOT EXISTS {{p}}meta (
	id             SMALLINT PRIMARY KEY CHECK (id = 1),
	epoch          VARCHAR(64) NOT NULL,
	tail           BIGINT NOT NULL,
	schema_version INTEGER NOT NULL)
--;
CREATE TABLE IF NOT EXISTS {{p}}local_revisions (
	node_id    VARCHAR(64) PRIMARY KEY,
	revision   BIGINT NOT NULL,
	epoch      VARCHAR(64) NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL)
--;
CREATE TABLE IF NOT EXISTS {{p}}locks (
	name        VARCHAR(128) PRIMARY KEY,
	owner       VARCHAR(64) NOT NULL,
	instance    VARCHAR(64) NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at TIMESTAMPTZ NOT NULL,
	renewed_at  TIMESTAMPTZ NOT NULL,
	expires_at  TIMESTAMPTZ NOT NULL)
--;
INSERT INTO {{p}}global_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING
--;
INSERT INTO {{p}}meta (id, epoch, tail, schema_version) VALUES (1, '0123456789abcdef0123456789abcdef', 1, 1) ON CONFLICT (id) DO NOTHING
