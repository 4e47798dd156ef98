#!/usr/bin/env bash
# Benchmark: comps-core scaffolding vs a bare axum handler (echo example), with wrk.
# Usage: scripts/bench/scaffolding.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "installing wrk (Debian)"; apt-get install -y wrk >/dev/null; }
cargo build --release -p comps-core --examples
python3 scripts/bench/scaffolding.py "${1:-8}"
