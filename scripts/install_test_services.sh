#!/usr/bin/env bash
# bash scripts/install_test_services.sh
#
# Installs the services the tests run against for real: MariaDB (a MySQL-protocol server, Debian's
# mariadb-server package) for query_sql, and Chromium with its WebDriver (Debian's chromium and
# chromium-driver) for the playground's browser test. Idempotent and quiet: installs only what is
# missing (`mariadbd`, `chromium`, `chromedriver` on PATH or in /usr/sbin, /usr/bin). Needs root and
# apt-get (CI runs as root on Debian); elsewhere it says what to install and exits 0, so those tests
# skip locally (they never skip under CI=true).
set -euo pipefail

has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

packages=()
has mariadbd || packages+=(mariadb-server)
has chromium || packages+=(chromium)
has chromedriver || packages+=(chromium-driver)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_services: install ${packages[*]} (needs root and apt-get) to run the MySQL and browser tests" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's chatter goes to a log that is shown only when something fails.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_test_services: installing ${packages[*]} failed" >&2
    exit 1
fi
for binary in mariadbd chromium chromedriver; do
    has "$binary" || {
        echo "install_test_services: ${packages[*]} installed but $binary is missing" >&2
        exit 1
    }
done
