#!/usr/bin/env bash
# Benchmark: the retriever's vector stores with 100k x 384 clustered vectors: ingest rate,
# p50 / p99 top-10 search latency and recall@10 against exact search, for the embedded store
# and for pgvector (a private Postgres from scripts/dev/pgvector-server.sh) in the same run.
# Usage: scripts/bench/retriever.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p comps-retriever --example bench_store
PGDIR="$(mktemp -d /tmp/comps-bench-pg.XXXXXX)"
trap 'bash scripts/dev/pgvector-server.sh stop "$PGDIR" >/dev/null 2>&1 || true; rm -rf "$PGDIR"' EXIT
chmod 755 "$PGDIR"
URL="$(bash scripts/dev/pgvector-server.sh start "$PGDIR" | tail -n 1)"
target/release/examples/bench_store "$URL"
