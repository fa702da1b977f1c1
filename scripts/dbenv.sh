#!/usr/bin/env bash
# dbenv.sh: throwaway PostgreSQL and MariaDB servers for tandem's tests and
# benchmarks.
#
# Usage
#
#   scripts/dbenv.sh [--env-file FILE]
#       Starts both servers, prints `export TANDEM_TEST_...=...` lines on
#       stdout (and, with --env-file, writes them to FILE once the servers
#       are ready), then keeps running until it is interrupted (Ctrl-C,
#       SIGTERM). Then it stops the servers and deletes their data. Progress
#       goes to stderr. For example, in one terminal:
#
#           scripts/dbenv.sh --env-file /tmp/tandem.env
#
#       and in another:
#
#           . /tmp/tandem.env
#           go test -race -run TestAppend ./journal/
#           go test -run '^$' -bench . ./journal/
#
#   . scripts/dbenv.sh
#       Defines dbenv_start and dbenv_stop and does nothing else;
#       scripts/test.sh (the test command) is built on them. dbenv_start
#       exports the variables into the calling shell; call dbenv_stop from
#       an EXIT trap.
#
# What dbenv_start does
#
#   - Finds PostgreSQL (initdb and postgres in PATH or in
#     /usr/lib/postgresql/*/bin) and MariaDB (mariadbd, mariadb-install-db,
#     mariadb). A missing one is installed from Debian's packages
#     (postgresql, mariadb-server) when running as root, with a temporary
#     policy-rc.d so that apt starts no system service; otherwise it fails
#     and says what to install.
#   - Makes a temp folder (mktemp -d, under $TMPDIR or /tmp) for data,
#     sockets and logs. As root, the servers run as the unprivileged user
#     tandemtest (created with useradd if absent), because postgres refuses
#     to run as root.
#   - Starts both on 127.0.0.1, on free ports, with 400 connections each
#     and MariaDB's buffer pool at 256 MB. Durability stays at the defaults
#     (PostgreSQL fsync and synchronous_commit on, MariaDB
#     innodb_flush_log_at_trx_commit=1, no binary log) so that benchmarks
#     measure honest commits.
#   - Creates database "tandem" and user "tandem" with a random password
#     on each (on MariaDB the user holds ALL on tandem.* WITH GRANT OPTION
#     and CREATE USER, so that tests can make accounts with a connection
#     limit, and nothing else; on PostgreSQL it is a superuser), checks that
#     the user can log in over TCP, and exports
#       TANDEM_TEST_POSTGRES  postgres://tandem:PW@127.0.0.1:PORT/tandem?sslmode=disable
#       TANDEM_TEST_MYSQL     tandem:PW@tcp(127.0.0.1:PORT)/tandem?parseTime=true
#       TANDEM_TEST_REQUIRE_DB=1
#
# Variables read
#
#   TANDEM_TEST_POSTGRES, TANDEM_TEST_MYSQL  when already set, that server
#       is neither installed nor started and the value is kept (run against
#       your own database)
#   TANDEM_DB_START_TIMEOUT  seconds to wait for each server to accept
#       connections; default 120

DBENV_USER=tandemtest # the user the servers run as when we are root
DBENV_DIR=
DBENV_PG_PID=
DBENV_MY_PID=
DBENV_POLICY_RC= # set when we created /usr/sbin/policy-rc.d
DBENV_AS=()      # command prefix that drops root for the servers

dbenv_log() { printf 'dbenv: %s\n' "$*" >&2; }
dbenv_die() {
	dbenv_log "error: $*"
	exit 1
}

# dbenv_find CMD... prints the first CMD found in PATH, /usr/sbin or
# /usr/bin (non-root PATHs on Debian lack /usr/sbin, where mariadbd lives).
dbenv_find() {
	local c
	for c in "$@"; do
		PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin" command -v "$c" 2>/dev/null && return 0
	done
	return 1
}

# dbenv_pg_bin prints the folder holding initdb, postgres and pg_ctl: the one
# of an initdb or postgres in PATH, else the newest /usr/lib/postgresql/*/bin.
dbenv_pg_bin() {
	local c p d
	for c in initdb postgres; do
		if p=$(command -v "$c" 2>/dev/null); then
			d=$(dirname "$(readlink -f "$p")")
			if [[ -x $d/initdb && -x $d/postgres ]]; then
				echo "$d"
				return 0
			fi
		fi
	done
	d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
	if [[ -n $d && -x $d/initdb && -x $d/postgres ]]; then
		echo "$d"
		return 0
	fi
	return 1
}

dbenv_have_mariadb() {
	dbenv_find mariadbd >/dev/null && dbenv_find mariadb-install-db >/dev/null &&
		dbenv_find mariadb mysql >/dev/null
}

# dbenv_install PKG... installs Debian packages, as root only.
dbenv_install() {
	if [[ $EUID -ne 0 ]]; then
		dbenv_die "missing $*: install it (on Debian: sudo apt-get install $*), run this as root to have it installed, or set TANDEM_TEST_POSTGRES / TANDEM_TEST_MYSQL to databases of your own"
	fi
	command -v apt-get >/dev/null || dbenv_die "missing $*, and there is no apt-get to install it with"
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		# Keep apt from starting system-wide servers we do not use.
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		DBENV_POLICY_RC=1
	fi
	dbenv_log "installing $* (apt-get)"
	apt-get update -q >&2 || dbenv_die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 ||
		dbenv_die "apt-get install $* failed"
	if [[ -n $DBENV_POLICY_RC ]]; then
		rm -f /usr/sbin/policy-rc.d
		DBENV_POLICY_RC=
	fi
}

# dbenv_free_port prints a TCP port on 127.0.0.1 that nothing listens on.
dbenv_free_port() {
	local p
	if p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) && [[ -n $p ]]; then
		echo "$p"
		return 0
	fi
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	dbenv_die "found no free port"
}

dbenv_password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

# dbenv_wait NAME PID LOG CHECK... runs CHECK until it succeeds. It returns 2
# when the server exited with a port clash (the caller retries on another
# port) and fails the script, printing LOG, when the server exited otherwise
# or did not answer in time.
dbenv_wait() {
	local name=$1 pid=$2 logf=$3
	shift 3
	local deadline=$((SECONDS + ${TANDEM_DB_START_TIMEOUT:-120}))
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null || true
			if grep -qiE 'address already in use|bind on tcp/ip port' "$logf"; then
				return 2
			fi
			dbenv_log "$name exited during start; its log ($logf):"
			cat "$logf" >&2
			dbenv_die "$name did not start"
		fi
		if ((SECONDS >= deadline)); then
			dbenv_log "$name did not accept connections within ${TANDEM_DB_START_TIMEOUT:-120} s; its log ($logf):"
			cat "$logf" >&2
			dbenv_die "$name did not start"
		fi
		sleep 0.2
	done
}

dbenv_start_postgres() {
	local bin psql pw port try rc d=$DBENV_DIR
	bin=$(dbenv_pg_bin) || dbenv_die "PostgreSQL still not found after installing it"
	psql=$bin/psql
	[[ -x $psql ]] || psql=$(command -v psql) || dbenv_die "psql not found (package postgresql-client)"
	pw=$(dbenv_password)
	printf '%s\n' "$pw" >"$d/pg.pw"
	mkdir "$d/pg"
	chmod 700 "$d/pg"
	if [[ ${#DBENV_AS[@]} -gt 0 ]]; then chown "$DBENV_USER:" "$d/pg.pw" "$d/pg"; fi
	# --no-sync only skips initdb's own flush of the new, empty cluster; the
	# server below runs with fsync on.
	if ! (cd "$d" && exec "${DBENV_AS[@]}" "$bin/initdb" -D "$d/pg" -U tandem --pwfile="$d/pg.pw" \
		--auth-host=scram-sha-256 --auth-local=trust -E UTF8 --no-locale --no-sync) >"$d/initdb.log" 2>&1; then
		cat "$d/initdb.log" >&2
		dbenv_die "initdb failed"
	fi
	rm -f "$d/pg.pw"
	for try in 1 2 3; do
		port=$(dbenv_free_port) || true
		[[ -n $port ]] || dbenv_die "found no free port"
		(cd "$d" && exec "${DBENV_AS[@]}" "$bin/postgres" -D "$d/pg" \
			-c listen_addresses=127.0.0.1 -c port="$port" -c unix_socket_directories="$d" \
			-c max_connections=400) >"$d/postgres.log" 2>&1 &
		DBENV_PG_PID=$!
		rc=0
		dbenv_wait PostgreSQL "$DBENV_PG_PID" "$d/postgres.log" \
			"$psql" -X -h "$d" -p "$port" -U tandem -d postgres -Atqc 'SELECT 1' || rc=$?
		[[ $rc -eq 0 ]] && break
		DBENV_PG_PID=
		dbenv_log "PostgreSQL: port $port was taken; trying another (try $try)"
	done
	[[ -n $DBENV_PG_PID ]] || dbenv_die "PostgreSQL found no free port"
	"$psql" -X -h "$d" -p "$port" -U tandem -d postgres -qc 'CREATE DATABASE tandem' >&2 ||
		dbenv_die "PostgreSQL: CREATE DATABASE failed"
	export TANDEM_TEST_POSTGRES="postgres://tandem:$pw@127.0.0.1:$port/tandem?sslmode=disable"
	PGPASSWORD=$pw "$psql" -X "$TANDEM_TEST_POSTGRES" -Atqc 'SELECT 1' >/dev/null ||
		dbenv_die "PostgreSQL: user tandem cannot log in over TCP"
	dbenv_log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

dbenv_start_mariadb() {
	local server install client pw port try rc d=$DBENV_DIR
	server=$(dbenv_find mariadbd) || dbenv_die "mariadbd still not found after installing it"
	install=$(dbenv_find mariadb-install-db) || dbenv_die "mariadb-install-db not found"
	client=$(dbenv_find mariadb mysql) || dbenv_die "mariadb client not found"
	mkdir "$d/mariadb"
	if [[ ${#DBENV_AS[@]} -gt 0 ]]; then chown "$DBENV_USER:" "$d/mariadb"; fi
	# --no-defaults everywhere: /etc/mysql's settings are for the system
	# server, not this one.
	if ! (cd "$d" && exec "${DBENV_AS[@]}" "$install" --no-defaults --datadir="$d/mariadb" \
		--auth-root-authentication-method=normal --skip-test-db \
		--skip-name-resolve) >"$d/mariadb-install.log" 2>&1; then
		cat "$d/mariadb-install.log" >&2
		dbenv_die "mariadb-install-db failed"
	fi
	local sock=$d/mariadb.sock
	for try in 1 2 3; do
		port=$(dbenv_free_port) || true
		[[ -n $port ]] || dbenv_die "found no free port"
		(cd "$d" && exec "${DBENV_AS[@]}" "$server" --no-defaults --datadir="$d/mariadb" \
			--socket="$sock" --pid-file="$d/mariadb.pid" --tmpdir="$d" \
			--bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
			--max-connections=400 --innodb-buffer-pool-size=256M \
			--skip-log-bin --innodb-flush-log-at-trx-commit=1 \
			--character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci) >"$d/mariadb.log" 2>&1 &
		DBENV_MY_PID=$!
		rc=0
		dbenv_wait MariaDB "$DBENV_MY_PID" "$d/mariadb.log" \
			"$client" --no-defaults -S "$sock" -u root -e 'SELECT 1' || rc=$?
		[[ $rc -eq 0 ]] && break
		DBENV_MY_PID=
		dbenv_log "MariaDB: port $port was taken; trying another (try $try)"
	done
	[[ -n $DBENV_MY_PID ]] || dbenv_die "MariaDB found no free port"
	pw=$(dbenv_password)
	"$client" --no-defaults -S "$sock" -u root -e "
		CREATE DATABASE tandem;
		CREATE USER 'tandem'@'%' IDENTIFIED BY '$pw';
		GRANT ALL PRIVILEGES ON tandem.* TO 'tandem'@'%' WITH GRANT OPTION;
		GRANT CREATE USER ON *.* TO 'tandem'@'%';" >&2 ||
		dbenv_die "MariaDB: creating database and user failed"
	"$client" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$port" -u tandem --password="$pw" tandem \
		-e 'SELECT 1' >/dev/null || dbenv_die "MariaDB: user tandem cannot log in over TCP"
	export TANDEM_TEST_MYSQL="tandem:$pw@tcp(127.0.0.1:$port)/tandem?parseTime=true"
	dbenv_log "MariaDB $("$server" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# dbenv_start installs what is missing, starts the servers and exports the
# TANDEM_TEST_* variables. Pair it with dbenv_stop in an EXIT trap, set
# before the call.
dbenv_start() {
	local want_pg='' want_my='' pkgs=()
	if [[ -n ${TANDEM_TEST_POSTGRES:-} ]]; then
		dbenv_log "TANDEM_TEST_POSTGRES is set: using it, starting no PostgreSQL"
	else
		want_pg=1
		dbenv_pg_bin >/dev/null || pkgs+=(postgresql)
	fi
	if [[ -n ${TANDEM_TEST_MYSQL:-} ]]; then
		dbenv_log "TANDEM_TEST_MYSQL is set: using it, starting no MariaDB"
	else
		want_my=1
		dbenv_have_mariadb || pkgs+=(mariadb-server)
	fi
	if [[ ${#pkgs[@]} -gt 0 ]]; then dbenv_install "${pkgs[@]}"; fi

	if [[ -n $want_pg$want_my ]]; then
		if [[ $EUID -eq 0 ]]; then
			if ! id -u "$DBENV_USER" >/dev/null 2>&1; then
				useradd --system --user-group --no-create-home --home-dir /nonexistent \
					--shell /usr/sbin/nologin "$DBENV_USER" 2>/dev/null ||
					id -u "$DBENV_USER" >/dev/null 2>&1 || dbenv_die "useradd $DBENV_USER failed"
			fi
			DBENV_AS=(setpriv --reuid="$(id -u "$DBENV_USER")" --regid="$(id -g "$DBENV_USER")" --clear-groups --)
		fi
		DBENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tandem-db.XXXXXX") || dbenv_die "mktemp failed"
		if [[ ${#DBENV_AS[@]} -gt 0 ]]; then
			chown "$DBENV_USER:" "$DBENV_DIR"
			"${DBENV_AS[@]}" test -w "$DBENV_DIR" ||
				dbenv_die "user $DBENV_USER cannot write $DBENV_DIR; point TMPDIR at a folder others may enter"
		fi
		dbenv_log "servers' data and logs in $DBENV_DIR"
	fi
	if [[ -n $want_pg ]]; then dbenv_start_postgres; fi
	if [[ -n $want_my ]]; then dbenv_start_mariadb; fi
	export TANDEM_TEST_REQUIRE_DB=1
}

# dbenv_exports prints the variables as shell export lines.
dbenv_exports() {
	printf "export TANDEM_TEST_POSTGRES='%s'\n" "$TANDEM_TEST_POSTGRES"
	printf "export TANDEM_TEST_MYSQL='%s'\n" "$TANDEM_TEST_MYSQL"
	printf "export TANDEM_TEST_REQUIRE_DB=1\n"
}

# dbenv_stop_pid PID SIGNAL NAME asks a server to stop, waits up to 30 s,
# then kills it.
dbenv_stop_pid() {
	local pid=$1 sig=$2 name=$3 i
	[[ -n $pid ]] || return 0
	kill -s "$sig" "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		dbenv_log "$name did not stop within 30 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	return 0
}

# dbenv_pidfile FILE prints the pid in FILE's first line if that process
# is one of ours: its command line names our folder.
dbenv_pidfile() {
	local pid
	pid=$(head -n 1 "$1" 2>/dev/null) || return 0
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DBENV_DIR/"; then
		echo "$pid"
	fi
	return 0
}

# dbenv_stop stops the servers dbenv_start started and removes their folder.
# It is safe to call at any point, and more than once.
# dbenv_session: what a script that runs go against the servers needs
# first: go in PATH, the servers stopped however the script ends (traps on
# EXIT, INT, TERM and HUP of the calling shell), and the servers started.
dbenv_session() {
	if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
		PATH=$PATH:/usr/local/go/bin
	fi
	command -v go >/dev/null || dbenv_die "go not found in PATH"
	trap dbenv_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM HUP
	dbenv_start
}

dbenv_stop() {
	# A signal that lands between starting a server and noting its pid
	# leaves the variable empty; the server's pid file still tells.
	if [[ -n $DBENV_DIR ]]; then
		[[ -n $DBENV_PG_PID ]] || DBENV_PG_PID=$(dbenv_pidfile "$DBENV_DIR/pg/postmaster.pid")
		[[ -n $DBENV_MY_PID ]] || DBENV_MY_PID=$(dbenv_pidfile "$DBENV_DIR/mariadb.pid")
	fi
	# SIGINT is PostgreSQL's fast shutdown, SIGTERM MariaDB's normal one.
	dbenv_stop_pid "$DBENV_PG_PID" INT PostgreSQL
	DBENV_PG_PID=
	dbenv_stop_pid "$DBENV_MY_PID" TERM MariaDB
	DBENV_MY_PID=
	if [[ -n $DBENV_DIR ]]; then
		rm -rf "$DBENV_DIR" || dbenv_log "could not remove $DBENV_DIR"
		DBENV_DIR=
	fi
	if [[ -n $DBENV_POLICY_RC ]]; then
		rm -f /usr/sbin/policy-rc.d || true
		DBENV_POLICY_RC=
	fi
	return 0
}

dbenv_main() {
	set -euo pipefail
	local env_file=
	while [[ $# -gt 0 ]]; do
		case $1 in
		--env-file)
			[[ $# -ge 2 ]] || dbenv_die "--env-file needs a file name"
			env_file=$2
			shift 2
			;;
		--env-file=*)
			env_file=${1#--env-file=}
			shift
			;;
		-h | --help)
			sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
			exit 0
			;;
		*) dbenv_die "unknown argument $1 (see --help)" ;;
		esac
	done
	trap dbenv_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM HUP
	dbenv_start
	dbenv_exports
	if [[ -n $env_file ]]; then
		dbenv_exports >"$env_file.tmp.$$"
		mv "$env_file.tmp.$$" "$env_file"
	fi
	local pids=()
	[[ -z $DBENV_PG_PID ]] || pids+=("$DBENV_PG_PID")
	[[ -z $DBENV_MY_PID ]] || pids+=("$DBENV_MY_PID")
	if [[ ${#pids[@]} -eq 0 ]]; then
		dbenv_log "both variables were set: no server to run"
		exit 0
	fi
	dbenv_log "ready; Ctrl-C or SIGTERM stops the servers and deletes their data"
	local rc=0
	wait -n "${pids[@]}" || rc=$?
	dbenv_log "a server exited on its own (status $rc); stopping"
	exit 1
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	dbenv_main "$@"
fi
