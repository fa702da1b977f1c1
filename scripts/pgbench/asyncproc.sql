-- The async-commit hold and its flush in one CALL (setup.sql's
-- pb_append_async), :n records per call (pgbench -D n=N).
CALL pb_append_async(:n);
