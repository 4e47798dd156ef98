#!/usr/bin/env bash
# The full ChatQnA pipeline in Docker on a machine that reaches no container registry: builds a
# Debian base image locally (scripts/docker/base-image.sh), the binaries on the host, and the image
# from them (docker/Dockerfile.prebuilt), then runs docker-compose.yaml.
#
#   scripts/compose.sh up      start the pipeline on OPEA's ports (8888, 6006, 7000, 8808, 9009, 9090)
#   scripts/compose.sh down    stop it and remove its containers, network and data volume
#   scripts/compose.sh test    start it on free ports, check it end to end (an answer through the
#                              containers, a stopped llm container -> fast 502 naming the llm
#                              node, recovery after restarting it), then take it down
#
# COMPS_DOCKER_PROFILE=debug packs debug binaries (what the test suite has built already).
# COMPS_DOCKER_SOURCE=1 builds the image from source instead (docker/Dockerfile, its cached
# dependency layer), with a Rust builder image made locally by scripts/docker/builder-image.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE_IMAGE:-comps-rs/bookworm-base}"
PROFILE="${COMPS_DOCKER_PROFILE:-release}"
BINS=(comps-embedding comps-retriever comps-rerank comps-llm comps-guardrail chatqna comps-flow)
COMPOSE=(docker-compose)
command -v docker-compose >/dev/null || COMPOSE=(docker compose)

stage() {
    bash scripts/fetch-models.sh
    bash scripts/docker/base-image.sh "$BASE"
    if [ "${COMPS_DOCKER_SOURCE:-0}" = 1 ]; then
        export BUILDER_IMAGE="${BUILDER_IMAGE:-comps-rs/rust-builder:1.95}" BASE_IMAGE="$BASE"
        bash scripts/docker/builder-image.sh "$BUILDER_IMAGE"
        "${COMPOSE[@]}" -p "$PROJECT" build
        return
    fi
    local pkgs=(-p comps-embedding -p comps-retriever -p comps-rerank -p comps-llm -p comps-guardrail -p comps-chatqna -p comps-flow)
    if [ "$PROFILE" = release ]; then
        cargo build --release --locked "${pkgs[@]}"
    else
        cargo build --locked "${pkgs[@]}"
    fi
    rm -rf docker/bin && mkdir -p docker/bin
    for b in "${BINS[@]}"; do
        objcopy --strip-debug "target/$PROFILE/$b" "docker/bin/$b"
    done
    export COMPS_BUILD_CONTEXT=docker COMPS_DOCKERFILE=Dockerfile.prebuilt BASE_IMAGE="$BASE"
    "${COMPOSE[@]}" -p "$PROJECT" build
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-up}" in
up)
    PROJECT="${COMPOSE_PROJECT_NAME:-comps-rs}"
    stage
    "${COMPOSE[@]}" -p "$PROJECT" up -d
    echo "waiting for the pipeline to be healthy"
    for _ in $(seq 1 180); do
        curl -fsS "localhost:${CHATQNA_HOST_PORT:-8888}/v1/health_check" >/dev/null 2>&1 && break
        sleep 1
    done
    echo "ChatQnA is up: curl -N localhost:${CHATQNA_HOST_PORT:-8888}/v1/chatqna -H 'content-type: application/json' -d '{\"messages\": \"What colour is the Zephyrine lighthouse?\"}'"
    ;;
down)
    PROJECT="${COMPOSE_PROJECT_NAME:-comps-rs}"
    "${COMPOSE[@]}" -p "$PROJECT" down -v --remove-orphans
    ;;
test)
    PROJECT="comps-rs-test-$$"
    for v in CHATQNA EMBEDDING RETRIEVER RERANK LLM GUARDRAIL; do
        export "${v}_HOST_PORT=$(free_port)"
    done
    trap '"${COMPOSE[@]}" -p "$PROJECT" down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
    stage
    "${COMPOSE[@]}" -p "$PROJECT" up -d
    COMPOSE_CMD="${COMPOSE[*]} -p $PROJECT" python3 scripts/docker/compose_check.py "http://127.0.0.1:$CHATQNA_HOST_PORT"
    "${COMPOSE[@]}" -p "$PROJECT" down -v --remove-orphans
    trap - EXIT
    left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
    if [ -n "$left" ]; then
        echo "compose test: FAILED: containers left after down: $left" >&2
        exit 1
    fi
    if docker volume ls -q | grep -q "^${PROJECT}_"; then
        echo "compose test: FAILED: volumes left after down" >&2
        exit 1
    fi
    echo "compose test: passed (nothing left running)"
    ;;
*)
    echo "usage: $0 up|down|test" >&2
    exit 2
    ;;
esac
