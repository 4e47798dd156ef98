#!/usr/bin/env bash
# `promtool check metrics` on every service's /metrics after real traffic
# (tests/metrics/promtool_test.py). Run by scripts/test.sh. Debian's prometheus package (for
# promtool) is installed with apt-get when missing; its daemon is not started.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (for promtool) with apt-get"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
bash scripts/fetch-models.sh >/dev/null
exec python3 tests/metrics/promtool_test.py --bin "${COMPS_BIN:-target/debug}" "$@"
