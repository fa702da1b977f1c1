-- Tables of the server-side comparison (run.sh): the journal's counter and
-- rows as tandem's PostgreSQL dialect creates them, a plain table with an
-- identity key, and a staging table for the combining prototype.
DROP TABLE IF EXISTS pb_journal, pb_counter, pb_plain, pb_stage;
CREATE TABLE pb_journal (revision BIGINT PRIMARY KEY, node_id VARCHAR(64) NOT NULL, instance VARCHAR(64),
	batch_id BIGINT, producer VARCHAR(128) NOT NULL, payload BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE pb_counter (id INT PRIMARY KEY, revision BIGINT NOT NULL);
INSERT INTO pb_counter VALUES (1, 0);
CREATE TABLE pb_plain (id BIGSERIAL PRIMARY KEY, node_id VARCHAR(64) NOT NULL, producer VARCHAR(128) NOT NULL,
	payload BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE pb_stage (handle BIGINT NOT NULL, seq INT NOT NULL, node_id VARCHAR(64) NOT NULL, instance VARCHAR(64) NOT NULL,
	producer VARCHAR(128) NOT NULL, payload BYTEA NOT NULL, created_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (handle, seq));
-- One row per client for the async-commit prototype's flushing commit.
DROP TABLE IF EXISTS pb_flush;
CREATE TABLE pb_flush (id INT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO pb_flush SELECT g, 0 FROM generate_series(0, 63) g;
-- The async-commit hold in one round trip (asyncproc.sql): a procedure
-- whose first transaction appends p_n records under the counter and
-- commits asynchronously (the row lock goes once the commit record is in
-- the WAL buffers), and whose second transaction writes one WAL record and
-- commits synchronously, flushing the WAL past the first before the CALL
-- returns. Concurrent callers share those flushes.
CREATE OR REPLACE PROCEDURE pb_append_async(p_n int, INOUT p_rev bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('synchronous_commit', 'off', true);
	UPDATE pb_counter SET revision = revision + p_n WHERE id = 1 RETURNING revision INTO p_rev;
	INSERT INTO pb_journal SELECT p_rev - p_n + g, 'n', 'i', 1, 'bench', convert_to(repeat('x', 512), 'UTF8'), now()
	FROM generate_series(1, p_n) g;
	COMMIT;
	PERFORM pg_logical_emit_message(true, 'tandem', '');
	COMMIT;
END $$;
