#!/usr/bin/env bash
# bash scripts/install_test_services.sh
#
# Installs the services the toolkit tests run against for real: MariaDB (a MySQL-protocol server,
# Debian's mariadb-server package) for query_sql. Idempotent and quiet: does nothing when
# `mariadbd` is already on PATH (or in /usr/sbin). Needs root and apt-get (CI runs as root on
# Debian); elsewhere it says what to install and exits 0, so the MySQL test skips locally
# (it never skips under CI=true).
set -euo pipefail

if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_services: mariadbd not found; install mariadb-server (needs root and apt-get) to run the MySQL test" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's chatter goes to a log that is shown only when something fails.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends mariadb-server; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_test_services: installing mariadb-server failed" >&2
    exit 1
fi
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || {
    echo "install_test_services: mariadb-server installed but mariadbd is missing" >&2
    exit 1
}
