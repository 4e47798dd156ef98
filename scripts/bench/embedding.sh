#!/usr/bin/env bash
# Benchmark: embedding throughput (candle offline, PyTorch in the same run when .venv exists,
# the service under 64 concurrent clients). Usage: scripts/bench/embedding.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "installing wrk (Debian)"; apt-get install -y wrk >/dev/null; }
bash scripts/fetch-models.sh all-MiniLM-L6-v2
cargo build --release -p comps-embedding --examples --bins
python3 scripts/bench/embedding.py "${1:-3}"
