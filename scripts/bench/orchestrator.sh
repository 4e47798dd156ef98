#!/usr/bin/env bash
# Benchmark: the orchestrator on a 4-hop ChatQnA-like chain of mock backends, with wrk.
# Usage: scripts/bench/orchestrator.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "installing wrk (Debian)"; apt-get install -y wrk >/dev/null; }
cargo build --release -p comps-flow -p comps-mock-backends
python3 scripts/bench/orchestrator.py "${1:-8}"
