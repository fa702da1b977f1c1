-- Prototype: the append's transaction commits asynchronously, so the
-- counter's row lock is released before the WAL flush; then a synchronous
-- commit of a row of this client's own flushes the WAL past the append
-- before it is acknowledged. Flushes of concurrent clients share fsyncs.
WITH s AS (SELECT set_config('synchronous_commit', 'off', true) AS x),
c AS (UPDATE pb_counter SET revision = revision + 1 WHERE id = 1 AND (SELECT x FROM s) IS NOT NULL RETURNING revision),
ins AS (INSERT INTO pb_journal SELECT c.revision, 'n', 'i', 1, 'bench', convert_to(repeat('x', 512), 'UTF8'), now() FROM c)
SELECT revision FROM c;
UPDATE pb_flush SET n = n + 1 WHERE id = :client_id;
