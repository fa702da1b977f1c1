-- Schema version 1 as the first release created it (MySQL, MariaDB), kept
-- as a fixture for the migration tests. {{p}} is the table prefix; a line
-- "--;" ends each statement.
CREATE TABLE IF NOT EXISTS {{p}}journal (
	revision   BIGINT NOT NULL PRIMARY KEY,
	node_id    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	producer   VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	payload    LONGBLOB NOT NULL,
	created_at DATETIME(6) NOT NULL) ENGINE=InnoDB
--;
CREATE TABLE IF NOT EXISTS {{p}}global_revision (
	id       TINYINT NOT NULL PRIMARY KEY,
	revision BIGINT NOT NULL) ENGINE=InnoDB
--;
CREATE TABLE IF NOT EXISTS {{p}}meta (
	id             TINYINT NOT NULL PRIMARY KEY,
	epoch          VARCHAR(64) CHARACTER SET ascii NOT NULL,
	tail           BIGINT NOT NULL,
	schema_version INT NOT NULL) ENGINE=InnoDB
--;
CREATE TABLE IF NOT EXISTS {{p}}local_revisions (
	node_id    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
	revision   BIGINT NOT NULL,
	epoch      VARCHAR(64) CHARACTER SET ascii NOT NULL,
	updated_at DATETIME(6) NOT NULL) ENGINE=InnoDB
--;
CREATE TABLE IF NOT EXISTS {{p}}locks (
	name        VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
	owner       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	instance    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	token       BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL,
	acquired_at DATETIME(6) NOT NULL,
	renewed_at  DATETIME(6) NOT NULL,
	expires_at  DATETIME(6) NOT NULL) ENGINE=InnoDB
--;
INSERT IGNORE INTO {{p}}global_revision (id, revision) VALUES (1, 0)
--;
INSERT IGNORE INTO {{p}}meta (id, epoch, tail, schema_version) VALUES (1, '0123456789abcdef0123456789abcdef', 1, 1)
--;
CREATE PROCEDURE {{p}}append_v1(IN p_n BIGINT, IN p_node VARCHAR(64), IN p_expect BIGINT, IN p_entries LONGTEXT)
MODIFIES SQL DATA
BEGIN
	DECLARE v_rev BIGINT;
	DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
	START TRANSACTION;
	SELECT revision INTO v_rev FROM {{p}}global_revision WHERE id = 1 FOR UPDATE;
	IF p_expect >= 0 AND v_rev <> p_expect THEN
		ROLLBACK;
		SELECT -1;
	ELSE
		UPDATE {{p}}global_revision SET revision = v_rev + p_n WHERE id = 1;
		INSERT INTO {{p}}journal (revision, node_id, producer, payload, created_at)
		SELECT v_rev + e.ord, p_node, e.producer, FROM_BASE64(e.payload), UTC_TIMESTAMP(6)
		FROM JSON_TABLE(p_entries, '$[*]' COLUMNS (
			ord      FOR ORDINALITY,
			producer VARCHAR(128) CHARACTER SET ascii PATH '$[0]',
			payload  LONGTEXT PATH '$[1]')) AS e;
		COMMIT;
		SELECT v_rev + 1;
	END IF;
END
