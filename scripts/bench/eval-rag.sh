#!/usr/bin/env bash
# RAG evaluation of ChatQnA on our own question set (scripts/bench/eval/data/): retrieval hit rate,
# answer accuracy, latency and TTFT per LLM; results also in bench-results/eval-rag.json.
# Fetches the models if absent; builds the release binaries only when no complete set exists.
#
#   scripts/bench/eval-rag.sh [--models models/A,models/B] [--bin DIR] [--out FILE] [--limit N]
#                       [--embedder models/E] [--top-n N] [--set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/../.."

MODELS_DIR="${MODELS_DIR:-models}"
for m in all-MiniLM-L6-v2 multilingual-e5-small Qwen2.5-Coder-0.5B-Instruct SmolLM2-135M-Instruct; do
    if [ ! -f "$MODELS_DIR/$m/.fetched" ]; then
        bash scripts/fetch-models.sh
        break
    fi
done

BINS=(comps-embedding comps-retriever comps-rerank comps-llm comps-guardrail chatqna comps)
complete() { for b in "${BINS[@]}"; do [ -x "$1/$b" ] || return 1; done; }

bin=""
args=("$@")
for i in "${!args[@]}"; do
    case "${args[$i]}" in
        --bin) bin="${args[$((i + 1))]:-}" ;;
        --bin=*) bin="${args[$i]#--bin=}" ;;
    esac
done
if [ -z "$bin" ]; then
    if complete target/release; then bin=target/release; elif complete target/debug; then bin=target/debug; fi
fi
if [ -z "$bin" ] || ! complete "$bin"; then
    echo "no complete set of binaries${bin:+ in $bin}: building release" >&2
    cargo build --release --locked -p comps-embedding -p comps-retriever -p comps-rerank -p comps-llm \
        -p comps-guardrail -p comps-chatqna -p comps-launcher
    bin=target/release
fi
exec python3 scripts/bench/eval/eval_rag.py "$@" --bin "$bin"
