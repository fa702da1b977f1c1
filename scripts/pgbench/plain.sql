-- A plain autocommit insert: no lock, no order.
INSERT INTO pb_plain (node_id, producer, payload, created_at) VALUES ('n', 'bench', convert_to(repeat('x', 512), 'UTF8'), now());
