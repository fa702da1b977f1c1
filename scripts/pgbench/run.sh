#!/usr/bin/env bash
# run.sh: the server-side comparison behind issue 11's decision on
# cross-node combining (BENCHMARKS.md, "Cross-node combining"). pgbench
# runs, against a throwaway PostgreSQL (scripts/dbenv.sh), tandem's append
# statement, a plain insert, the combining prototype and the async-commit
# prototype (asyncflush.sql, and asyncproc.sql: the same in one CALL) with 1, 8 and 16
# clients, 4 s each, so that no Go client is involved.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# shellcheck source=scripts/dbenv.sh
. scripts/dbenv.sh
dbenv_session
pgbench=$(dbenv_pg_bin)/pgbench
psql=$(dbenv_pg_bin)/psql
"$psql" -q "$TANDEM_TEST_POSTGRES" -f "$here/setup.sql"
for c in 1 8 16; do
	for f in append plain combine asyncflush; do
		tps=$("$pgbench" -n -M prepared -c "$c" -j 2 -T 4 -f "$here/$f.sql" "$TANDEM_TEST_POSTGRES" 2>&1 | awk '/^tps/ {print $3}')
		printf '%-8s clients=%-3s %10.0f records/s\n' "$f" "$c" "$tps"
	done
done
# Batches of 8 records per statement, 4 and 8 clients: the shape of 4 x 32,
# where each node's group commit carries about 8 records; plain inserts
# with 32 clients beside them. Figures are records/s (8 per transaction).
tps() { "$pgbench" -n -M prepared -c "$1" -j 2 -T 4 -f "$2" "$TANDEM_TEST_POSTGRES" 2>&1 | awk '/^tps/ {print $3}'; }
printf '%-8s clients=%-3s %10.0f records/s\n' plain 32 "$(tps 32 "$here/plain.sql")"
for c in 4 8; do
	for f in append8 combine8; do
		printf '%-8s clients=%-3s %10.0f records/s\n' "$f" "$c" "$(awk -v t="$(tps "$c" "$here/$f.sql")" 'BEGIN { print t * 8 }')"
	done
done

# The async-commit hold in one round trip (asyncproc.sql), against the
# direct append with the same records per statement and plain inserts from
# as many clients as the benchmark's appenders: 1 x 1 (one client, one
# record), 4 x 8 (4 clients, 2 records each, against 8 plain clients) and
# 4 x 32 (4 clients, 8 records each, against 32 plain clients).
tpsn() { "$pgbench" -n -M prepared -c "$1" -j 2 -T 4 -D n="$3" -f "$2" "$TANDEM_TEST_POSTGRES" 2>&1 | awk -v n="$3" '/^tps/ {printf "%.0f", $3 * n}'; }
for shape in "1 1 1" "4 2 8" "4 8 32"; do
	read -r c n p <<<"$shape"
	printf 'clients=%s records/statement=%s: plain(%s clients) %s  append %s  asyncproc %s records/s\n' \
		"$c" "$n" "$p" "$(tps "$p" "$here/plain.sql" | awk '{printf "%.0f", $1}')" \
		"$(tpsn "$c" "$here/appendn.sql" "$n")" "$(tpsn "$c" "$here/asyncproc.sql" "$n")"
done
