-- tandem's append of one record: the counter and the row in one statement.
WITH c AS (UPDATE pb_counter SET revision = revision + 1 WHERE id = 1 RETURNING revision),
ins AS (INSERT INTO pb_journal SELECT c.revision, 'n', 'i', 1, 'bench', convert_to(repeat('x', 512), 'UTF8'), now() FROM c)
SELECT revision FROM c;
