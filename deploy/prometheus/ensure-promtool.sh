#!/bin/sh
# promtool and prometheus for the tests (tests/unit/test_alert_rules.py,
# tests/e2e/test_observability.py): Debian's `prometheus` package (2.42), installed
# when missing if we are root with apt-get (as CI is). Otherwise it says so in one line,
# and the tests that need them fail with that same line (`--check` prints it, exit 1).
set -eu
MISSING="promtool/prometheus not found: install Debian's prometheus package (apt-get install --no-install-recommends prometheus), or run make test as root, which installs it"
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "$MISSING"
  exit 1
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-promtool: installing Debian's prometheus package (promtool, prometheus)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  exit 0
fi
echo "ensure-promtool: $MISSING" >&2
