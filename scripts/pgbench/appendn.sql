-- tandem's append of a group commit of :n records (pgbench -D n=N).
\set b random(1, 9223372036854775806)
WITH c AS (UPDATE pb_counter SET revision = revision + :n WHERE id = 1 RETURNING revision),
ins AS (INSERT INTO pb_journal SELECT c.revision - :n + g, 'n', 'i', :b, 'bench', convert_to(repeat('x', 512), 'UTF8'), now() FROM c, generate_series(1, :n) g)
SELECT revision FROM c;
