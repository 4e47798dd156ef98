#!/usr/bin/env bash
# The SDK tests (tests/sdk/sdk_test.py): the OpenAI Python SDK and langchain-openai, unmodified,
# against the llm, embedding and chatqna services `comps up` starts on loopback (SmolLM2 and
# MiniLM). Run by scripts/test.sh after the hostile suite.
#
#   scripts/dev/sdk.sh                         # debug binaries (cargo build --workspace --bins)
#   COMPS_BIN=target/release scripts/dev/sdk.sh
#
# The clients from PyPI, pinned, in .venv-sdk/.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-sdk
. scripts/dev/venv.sh
pinned_venv "$VENV" "openai==3.63.0 langchain-openai==1.8.1"
bash scripts/fetch-models.sh >/dev/null
exec "$VENV/bin/python" tests/sdk/sdk_test.py --bin "${COMPS_BIN:-target/debug}" "$@"
