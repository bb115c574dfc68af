#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs all of it:
# lint, type check and pytest (unit, property, fuzz smoke, and integration tests on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v tshark >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq tshark iproute2 >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check '.[test]'

ruff check .
ruff format --check .
mypy
python -m pytest "$@"
