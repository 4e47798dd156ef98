#!/usr/bin/env bash
# The standing hostile suite (tests/hostile/suite.py): the real ChatQnA stack on loopback,
# its OpenAPI documents validated, fuzzed with schemathesis, attacked with the files and
# requests that once broke it, and put through faults (a downstream killed and stopped under
# load, 1,000 dropped streams, overload, kill -9 during ingest). Bounded in requests and time;
# prints one summary line. Run by scripts/test.sh after the cargo tests.
#
#   scripts/dev/hostile.sh            # debug binaries (cargo build --workspace --bins)
#   scripts/dev/hostile.sh --soak     # the longer version
#   COMPS_BIN=target/release scripts/dev/hostile.sh
#
# Python tools from PyPI, pinned, in .venv-hostile/.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-hostile
. scripts/dev/venv.sh
pinned_venv "$VENV" "schemathesis==4.32.5 openapi-spec-validator==0.9.0"
bash scripts/fetch-models.sh >/dev/null
exec "$VENV/bin/python" tests/hostile/suite.py --bin "${COMPS_BIN:-target/debug}" --st "$PWD/$VENV/bin/st" "$@"
