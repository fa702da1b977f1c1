-- tandem's append of a group commit of 8 records (a node's batch at 4 x 32).
\set b random(1, 9223372036854775806)
WITH c AS (UPDATE pb_counter SET revision = revision + 8 WHERE id = 1 RETURNING revision),
ins AS (INSERT INTO pb_journal SELECT c.revision - 8 + g, 'n', 'i', :b, 'bench', convert_to(repeat('x', 512), 'UTF8'), now() FROM c, generate_series(1, 8) g)
SELECT revision FROM c;
