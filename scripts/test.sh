#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs all of it:
# lint, type check and pytest (unit, property, fuzz smoke, and integration tests on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { ! command -v "$1" >/dev/null 2>&1; }
if need tshark || need ip || need ping || need freeradius || need radclient; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq tshark iproute2 iputils-ping freeradius freeradius-utils >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check '.[test]'

# The PostgreSQL tests run against $LNS_TEST_POSTGRES_URL, else against a local server
# (postgresql+psycopg://postgres@127.0.0.1:5432/test) when one answers there; otherwise
# pytest's summary names why they were skipped.
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
