-- Schema version 1 as the first release created it (Oracle), kept as a
-- fixture for the migration tests. {{p}} is the table prefix; a line "--;"
-- ends each statement.
CREATE TABLE {{p}}journal (
	revision   NUMBER(19) NOT NULL PRIMARY KEY,
	node_id    VARCHAR2(64) NOT NULL,
	producer   VARCHAR2(128) NOT NULL,
	payload    BLOB,
	created_at TIMESTAMP(6) NOT NULL)
--;
CREATE TABLE {{p}}global_revision (
	id       NUMBER(1) NOT NULL PRIMARY KEY CHECK (id = 1),
	revision NUMBER(19) NOT NULL)
--;
CREATE TABLE {{p}}meta (
	id             NUMBER(1) NOT NULL PRIMARY KEY CHECK (id = 1),
	epoch          VARCHAR2(64) NOT NULL,
	tail           NUMBER(19) NOT NULL,
	schema_version NUMBER(10) NOT NULL)
--;
CREATE TABLE {{p}}local_revisions (
	node_id    VARCHAR2(64) NOT NULL PRIMARY KEY,
	revision   NUMBER(19) NOT NULL,
	epoch      VARCHAR2(64),
	updated_at TIMESTAMP(6) NOT NULL)
--;
CREATE TABLE {{p}}locks (
	name        VARCHAR2(128) NOT NULL PRIMARY KEY,
	owner       VARCHAR2(64),
	instance    VARCHAR2(64),
	token       NUMBER(19) NOT NULL,
	heartbeat   NUMBER(19) NOT NULL,
	acquired_at TIMESTAMP(6) NOT NULL,
	renewed_at  TIMESTAMP(6) NOT NULL,
	expires_at  TIMESTAMP(6) NOT NULL)
--;
INSERT INTO {{p}}global_revision (id, revision) SELECT 1, 0 FROM dual
WHERE NOT EXISTS (SELECT 1 FROM {{p}}global_revision WHERE id = 1)
--;
INSERT INTO {{p}}meta (id, epoch, tail, schema_version) SELECT 1, '0123456789abcdef0123456789abcdef', 1, 1 FROM dual
WHERE NOT EXISTS (SELECT 1 FROM {{p}}meta WHERE id = 1)
