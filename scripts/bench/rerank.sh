#!/usr/bin/env bash
# Benchmark: reranking pairs/s at 128 tokens, batch 1 and 32 (bi-encoder MiniLM, BERT-base-sized
# cross-encoder). Usage: scripts/bench/rerank.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-models.sh all-MiniLM-L6-v2
cargo build --release -p comps-rerank --examples
target/release/examples/bench_rerank models/all-MiniLM-L6-v2 "${1:-3}"
