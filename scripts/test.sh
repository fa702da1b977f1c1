#!/usr/bin/env bash
# test.sh: the test command. Starts throwaway PostgreSQL and MariaDB servers
# (scripts/dbenv.sh, installing them first when they are missing and we are
# root), runs the tests against them with the race detector, and stops the
# servers and deletes their data when it ends, however it ends.
#
# Usage
#
#   scripts/test.sh                  go test -race -count=1 -timeout 20m ./...
#   scripts/test.sh ARGS...          go test -race -count=1 -timeout 20m ARGS...
#                                    e.g. scripts/test.sh -run TestAppend ./journal/
#                                    (ARGS replace ./..., so name the packages)
#
# It exits with go test's status. With TANDEM_TEST_REQUIRE_DB=1 (which it
# sets), a test that cannot reach PostgreSQL or MariaDB fails instead of
# skipping. SQL Server and Oracle tests run when TANDEM_TEST_SQLSERVER /
# TANDEM_TEST_ORACLE are set or a Docker engine answers, and skip otherwise.
# TANDEM_TEST_POSTGRES / TANDEM_TEST_MYSQL already set: that server is not
# started and your database is used instead.
#
# To keep the servers running for a while (benchmarks, a debugger), use
# scripts/dbenv.sh, which prints the same variables and runs until stopped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/dbenv.sh
. scripts/dbenv.sh

dbenv_session

if [[ $# -eq 0 ]]; then
	set -- ./...
fi
dbenv_log "go test -race -count=1 -timeout 20m $*"
status=0
go test -race -count=1 -timeout 20m "$@" || status=$?
exit "$status"
