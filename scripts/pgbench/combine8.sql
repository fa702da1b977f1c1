-- combine.sql with a node's batch of 8 records per statement (4 x 32's shape).
-- Cross-node combining, prototype: try the mover's lock without waiting;
-- the holder moves every staged row and its own record under the counter.
-- Otherwise stage the record (asynchronous commit: the mover's commit makes
-- it durable), wait for the lock and move what is staged, and look the
-- record up if an earlier mover took it.
\set b random(1, 9223372036854775806)
WITH g AS (SELECT pg_try_advisory_xact_lock(42) AS got),
st AS (INSERT INTO pb_stage SELECT :b, s, 'n', 'i', 'bench', convert_to(repeat('x', 512), 'UTF8'), now() FROM g, generate_series(1, 8) s WHERE NOT g.got),
moved AS (DELETE FROM pb_stage s USING g WHERE g.got RETURNING s.*),
n AS (SELECT count(*) AS n FROM moved),
c AS (UPDATE pb_counter SET revision = revision + n.n + 8 FROM n, g WHERE id = 1 AND g.got RETURNING revision, n.n),
ins AS (INSERT INTO pb_journal SELECT c.revision - c.n - 8 + row_number() OVER (ORDER BY m.handle, m.seq), m.node_id, m.instance, m.handle, m.producer, m.payload, now() FROM moved m, c),
mine AS (INSERT INTO pb_journal SELECT c.revision - 8 + s, 'n', 'i', :b, 'bench', convert_to(repeat('x', 512), 'UTF8'), now() FROM c, generate_series(1, 8) s)
SELECT g.got, (SELECT set_config('synchronous_commit', 'off', true) WHERE NOT g.got) AS sc FROM g \gset
\if :got
\else
WITH lk AS (SELECT pg_advisory_xact_lock(42) AS ok),
moved AS (DELETE FROM pb_stage s USING lk WHERE lk.ok IS NOT NULL RETURNING s.*),
n AS (SELECT count(*) AS n FROM moved),
c AS (UPDATE pb_counter SET revision = revision + n.n FROM n WHERE id = 1 AND n.n > 0 RETURNING revision, n.n),
ins AS (INSERT INTO pb_journal SELECT c.revision - c.n + row_number() OVER (ORDER BY m.handle, m.seq), m.node_id, m.instance, m.handle, m.producer, m.payload, now() FROM moved m, c)
SELECT (SELECT count(*) FROM moved WHERE handle = :b) AS mine \gset
\if :mine
\else
SELECT min(revision) FROM pb_journal WHERE revision > (SELECT revision - 2000 FROM pb_counter) AND batch_id = :b;
\endif
\endif
