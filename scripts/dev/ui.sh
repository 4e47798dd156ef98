#!/usr/bin/env bash
# The web UI's browser test (tests/ui/ui_test.py): headless Chromium driven by selenium against
# the pipeline `comps up` starts (SmolLM2, MiniLM) and chatqna processes wired to the mock
# backends. Run by scripts/test.sh after the SDK tests. Screenshots go to target/ui-screenshots/.
#
#   scripts/dev/ui.sh                         # debug binaries (cargo build --workspace --bins)
#   COMPS_BIN=target/release scripts/dev/ui.sh
#
# Debian's chromium, chromium-driver and python3-selenium are installed with apt-get when
# missing (the browser and its driver come from the same package version).
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Debian's python3-selenium lives in the system Python, whatever python3 is first on PATH.
PY=/usr/bin/python3
"$PY" -c 'import selenium' >/dev/null 2>&1 || need+=(python3-selenium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} with apt-get (for the browser test)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/fetch-models.sh >/dev/null
exec "$PY" tests/ui/ui_test.py --bin "${COMPS_BIN:-target/debug}" --shots "${UI_SHOTS:-target/ui-screenshots}" "$@"
