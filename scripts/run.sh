#!/usr/bin/env bash
# The main job. Until the ChatQnA megaservice lands this runs one service: the echo example
# microservice on port 9000 (flags after the script name go to it, e.g. --port 9100).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
cargo build --release -p comps-core --example echo
echo "echo service: curl -s localhost:${COMPS_PORT:-9000}/v1/echo -d '{\"text\": \"hello, \"}'"
exec target/release/examples/echo "$@"
