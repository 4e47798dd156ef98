#!/usr/bin/env bash
# `promtool check metrics` on every service's /metrics after real traffic
# (tests/metrics/promtool_test.py), then the dashboard test on the texts that run scraped
# (tests/observability/dashboard_test.py): the Grafana dashboard and the recording rules of
# deploy/observability/ read only metrics the services expose, and promtool checks the
# Prometheus config and rules. Run by scripts/test.sh. Debian's prometheus package (for
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
saved="$(mktemp -d /tmp/comps-metrics-texts.XXXXXX)"
trap 'rm -rf "$saved"' EXIT
status=0
python3 tests/metrics/promtool_test.py --bin "${COMPS_BIN:-target/debug}" --save-metrics "$saved" "$@" || status=$?
# Both run, so that one failure does not hide the other's findings; only with texts to read.
if compgen -G "$saved/*.txt" >/dev/null; then
  python3 tests/observability/dashboard_test.py --metrics-dir "$saved" || status=$?
fi
exit "$status"
