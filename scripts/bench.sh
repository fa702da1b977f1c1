#!/usr/bin/env bash
# bench.sh: the benchmarks quoted in BENCHMARKS.md. Starts the same
# throwaway PostgreSQL and MariaDB servers as the test command
# (scripts/dbenv.sh), runs the journal, lock, cluster and janitor benchmarks against them and
# stops them however it ends.
#
# Usage
#
#   scripts/bench.sh                 every journal, lock and cluster benchmark, 3 s each
#   scripts/bench.sh ARGS...         extra go test flags, e.g.
#                                    scripts/bench.sh -bench 'Append/mysql'
#                                    (a later -bench overrides the default)
#
# BenchmarkCatchUp* and BenchmarkNodeCatchUp fill a 1M-record journal
# first (up to a minute per database); TANDEM_BENCH_RECORDS=N changes the
# size. The figures in BENCHMARKS.md used -benchtime 1000x for
# BenchmarkPropagation on push backends, 50x on MariaDB, and 1x for
# BenchmarkNodeCatchUp.
#
# BenchmarkScale (issue 13: 10 to 200 nodes, each on its own pool) runs its
# scenario once per sub-benchmark and takes about 11 minutes in all; its
# figures in BENCHMARKS.md came from
#
#   scripts/bench.sh -v -bench BenchmarkScale -benchtime 1x
#
# (-v shows the statements an idle node sends). The default run includes it
# too: it runs its scenario once, whatever -benchtime says. TANDEM_SCALE_SYNCDELAY,
# TANDEM_SCALE_NODES and TANDEM_SCALE_ROUNDS shorten it, and
# TANDEM_SCALE_POOL=configured gives every node a cluster.ConfigurePool pool;
# see its doc. BenchmarkCapacity (how many idle nodes fit in 97 PostgreSQL
# connections, push on and off) likewise runs once, in about 90 s.
# scripts/pgbench/run.sh is the server-side comparison behind issue 11's
# decision on cross-node combining.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/dbenv.sh
. scripts/dbenv.sh

dbenv_session
go test -run '^$' -bench . -benchtime 3s -timeout 60m "$@" ./journal/ ./lock/ ./cluster/ ./janitor/
