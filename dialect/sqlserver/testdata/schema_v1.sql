-- Schema version 1 as the first release created it (SQL Server), kept as a
-- fixture for the migration tests. {{p}} is the table prefix; a line "--;"
-- ends each statement.
IF OBJECT_ID(N'{{p}}journal', N'U') IS NULL
CREATE TABLE {{p}}journal (
	revision   BIGINT NOT NULL PRIMARY KEY,
	node_id    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,
	producer   NVARCHAR(128) NOT NULL,
	payload    VARBINARY(MAX) NOT NULL,
	created_at DATETIME2(6) NOT NULL)
--;
IF OBJECT_ID(N'{{p}}global_revision', N'U') IS NULL
CREATE TABLE {{p}}global_revision (
	id       TINYINT NOT NULL PRIMARY KEY CHECK (id = 1),
	revision BIGINT NOT NULL)
--;
IF OBJECT_ID(N'{{p}}meta', N'U') IS NULL
CREATE TABLE {{p}}meta (
	id             TINYINT NOT NULL PRIMARY KEY CHECK (id = 1),
	epoch          NVARCHAR(64) NOT NULL,
	tail           BIGINT NOT NULL,
	schema_version INT NOT NULL)
--;
IF OBJECT_ID(N'{{p}}local_revisions', N'U') IS NULL
CREATE TABLE {{p}}local_revisions (
	node_id    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY,
	revision   BIGINT NOT NULL,
	epoch      NVARCHAR(64) NOT NULL,
	updated_at DATETIME2(6) NOT NULL)
--;
IF OBJECT_ID(N'{{p}}locks', N'U') IS NULL
CREATE TABLE {{p}}locks (
	name        NVARCHAR(128) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY,
	owner       NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,
	instance    NVARCHAR(64) COLLATE Latin1_General_BIN2 NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at DATETIME2(6) NOT NULL,
	renewed_at  DATETIME2(6) NOT NULL,
	expires_at  DATETIME2(6) NOT NULL)
--;
INSERT INTO {{p}}global_revision (id, revision) SELECT 1, 0
WHERE NOT EXISTS (SELECT 1 FROM {{p}}global_revision WITH (UPDLOCK, HOLDLOCK) WHERE id = 1)
--;
INSERT INTO {{p}}meta (id, epoch, tail, schema_version) SELECT 1, N'0123456789abcdef0123456789abcdef', 1, 1
WHERE NOT EXISTS (SELECT 1 FROM {{p}}meta WITH (UPDLOCK, HOLDLOCK) WHERE id = 1)
