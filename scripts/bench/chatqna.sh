#!/usr/bin/env bash
# Benchmark ChatQnA: orchestration overhead on mock backends (beside comps-flow) and the real
# pipeline's end-to-end time to first token and tokens/s at c=1 and c=4.
# Usage: scripts/bench/chatqna.sh [seconds-per-wrk-run] [--pipeline-only]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "installing wrk (Debian)"; apt-get install -y wrk >/dev/null; }
bash scripts/fetch-models.sh
cargo build --release --locked -p comps-chatqna -p comps-flow -p comps-mock-backends -p comps-embedding \
    -p comps-retriever -p comps-rerank -p comps-llm -p comps-launcher
python3 scripts/bench/chatqna.py "$@"
