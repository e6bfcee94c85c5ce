#!/usr/bin/env bash
# The services the scale-out tests use, on loopback, for people and CI:
#
#   scripts/test-services.sh start   # starts PostgreSQL, prints the export
#   scripts/test-services.sh stop
#   scripts/test-services.sh env     # the export line again
#
# PostgreSQL comes from Debian's package (postgresql; `apt-get install
# postgresql` if initdb is missing). Its cluster lives in
# target/test-services/pg (throw-away: trust auth on 127.0.0.1 only, fsync
# off). The S3-compatible server the tests need (s3s-fs, SigV4 checked) runs
# inside the test binary itself, so nothing else is started here.
#
# With STRATA_TEST_POSTGRES exported, `cargo test` runs the store and
# lifecycle tests on PostgreSQL too, and the two-servers-two-workers test;
# without it they run on SQLite only and say what they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${STRATA_PG_PORT:-54329}"
root="$PWD/target/test-services"
pgdata="$root/pg"
url="postgres://strata@127.0.0.1:$port/postgres"

pgbin() {
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ]; then
            echo "$dir"
            return
        fi
    done
    echo "PostgreSQL's server is not installed: apt-get install postgresql" >&2
    exit 1
}

# initdb refuses to run as root: run the cluster as the postgres user then
# (Debian's package makes it; made here if the binaries came without it).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
start)
    bin="$(pgbin)"
    mkdir -p "$root"
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        rm -rf "$pgdata"
        mkdir -p "$pgdata"
        [ "$(id -u)" -ne 0 ] || chown postgres "$pgdata"
        as_owner "$bin/initdb" -D "$pgdata" -U strata --auth=trust --no-sync >/dev/null
    fi
    if as_owner "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        echo "PostgreSQL already running on 127.0.0.1:$port" >&2
    else
        as_owner "$bin/pg_ctl" -D "$pgdata" -w -l "$pgdata/log" \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdata -c fsync=off -c max_connections=300" \
            start >/dev/null
        echo "PostgreSQL started on 127.0.0.1:$port" >&2
    fi
    echo "export STRATA_TEST_POSTGRES=$url"
    ;;
stop)
    bin="$(pgbin)"
    if [ -f "$pgdata/PG_VERSION" ]; then
        as_owner "$bin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
    fi
    echo "stopped" >&2
    ;;
env)
    echo "export STRATA_TEST_POSTGRES=$url"
    ;;
*)
    echo "usage: scripts/test-services.sh start|stop|env" >&2
    exit 2
    ;;
esac
