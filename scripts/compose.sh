#!/usr/bin/env bash
# The full ChatQnA pipeline in Docker on a machine that reaches no container registry: builds a
# Debian base image locally (scripts/docker/base-image.sh), the binaries on the host, and the image
# from them (docker/Dockerfile.prebuilt), then runs docker-compose.yaml.
#
#   scripts/compose.sh up      start the pipeline on OPEA's ports (8888, 6006, 7000, 8808, 9009, 9090)
#   scripts/compose.sh down    stop it and remove its containers, network and data volume
#   scripts/compose.sh test    start it on free ports, check it end to end (an answer through the
#                              containers, a stopped llm container -> fast 502 naming the llm
#                              node, recovery after restarting it), then Prometheus (every
#                              target up, per-node series, a recording rule), then take it down
#
# COMPOSE_PROFILES=observability adds Prometheus (the compose profile of that name, config and
# rules in deploy/observability/) on PROMETHEUS_HOST_PORT (9092). `test` always runs with it, and
# `down` always names it: Compose v2's `down` leaves the containers of profiles it is not given
# (docker-compose 1.29 removes them anyway).
# COMPS_DOCKER_PROFILE=debug packs debug binaries (what the test suite has built already).
# COMPS_COMPOSE_WAIT_SECS (180): how long `up` waits for a healthy pipeline before it fails,
# naming the containers that are not healthy, with the end of their logs.
# COMPS_SKIP_CARGO=1 packs the binaries already in target/<profile>/ without running cargo: when
# another cargo build holds the machine, or the binaries were built elsewhere (same glibc).
# COMPS_DOCKER_SOURCE=1 builds the image from source instead (docker/Dockerfile, its cached
# dependency layer), with a Rust builder image made locally by scripts/docker/builder-image.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${BASE_IMAGE:-comps-rs/bookworm-base}"
PROFILE="${COMPS_DOCKER_PROFILE:-release}"
BINS=(comps-embedding comps-retriever comps-rerank comps-llm comps-guardrail chatqna comps-flow)
COMPOSE=(docker-compose)
command -v docker-compose >/dev/null || COMPOSE=(docker compose)
# Every profile of docker-compose.yaml, for `down`.
ALL_PROFILES=(--profile observability)

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
    if [ "${COMPS_SKIP_CARGO:-0}" = 1 ]; then
        echo "COMPS_SKIP_CARGO=1: packing target/$PROFILE/ as it is, no cargo build"
    elif [ "$PROFILE" = release ]; then
        cargo build --release --locked "${pkgs[@]}"
    else
        cargo build --locked "${pkgs[@]}"
    fi
    for b in "${BINS[@]}"; do
        [ -x "target/$PROFILE/$b" ] || {
            echo "no target/$PROFILE/$b to pack: build it (without COMPS_SKIP_CARGO=1)" >&2
            exit 1
        }
    done
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

# Wait until chatqna on PORT answers its health check, at most SECS seconds. Otherwise say which
# container is not healthy, with the end of its log, and fail: the pipeline is not up.
wait_healthy() {
    local project=$1 port=$2 secs=$3 c state
    echo "waiting for the pipeline to be healthy (at most $secs s)"
    for _ in $(seq 1 "$secs"); do
        curl -fsS "localhost:$port/v1/health_check" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "ChatQnA did not become healthy within $secs s on port $port:" >&2
    "${COMPOSE[@]}" -p "$project" ps >&2 || true
    for c in $("${COMPOSE[@]}" -p "$project" ps -q 2>/dev/null); do
        state=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c" 2>/dev/null || true)
        case "$state" in
        *" running healthy") ;;
        *)
            echo "--- ${state#/} (the end of its log):" >&2
            docker logs --tail 20 "$c" 2>&1 | sed 's/^/    /' >&2 || true
            ;;
        esac
    done
    echo "it is left running for a look; scripts/compose.sh down stops it" >&2
    return 1
}

case "${1:-up}" in
up)
    PROJECT="${COMPOSE_PROJECT_NAME:-comps-rs}"
    stage
    "${COMPOSE[@]}" -p "$PROJECT" up -d
    wait_healthy "$PROJECT" "${CHATQNA_HOST_PORT:-8888}" "${COMPS_COMPOSE_WAIT_SECS:-180}" || exit 1
    echo "ChatQnA is up: curl -N localhost:${CHATQNA_HOST_PORT:-8888}/v1/chatqna -H 'content-type: application/json' -d '{\"messages\": \"What colour is the Zephyrine lighthouse?\"}'"
    case ",${COMPOSE_PROFILES:-}," in
    *,observability,*)
        echo "Prometheus: http://localhost:${PROMETHEUS_HOST_PORT:-9092} (Grafana dashboard: deploy/observability/grafana/)"
        ;;
    esac
    ;;
down)
    PROJECT="${COMPOSE_PROJECT_NAME:-comps-rs}"
    "${COMPOSE[@]}" -p "$PROJECT" "${ALL_PROFILES[@]}" down -v --remove-orphans
    ;;
test)
    PROJECT="comps-rs-test-$$"
    for v in CHATQNA EMBEDDING RETRIEVER RERANK LLM GUARDRAIL PROMETHEUS; do
        export "${v}_HOST_PORT=$(free_port)"
    done
    export COMPOSE_PROFILES=observability
    trap '"${COMPOSE[@]}" -p "$PROJECT" "${ALL_PROFILES[@]}" down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
    stage
    "${COMPOSE[@]}" -p "$PROJECT" up -d
    COMPOSE_CMD="${COMPOSE[*]} -p $PROJECT" python3 scripts/docker/compose_check.py "http://127.0.0.1:$CHATQNA_HOST_PORT"
    # After compose_check.py: it stops and restarts the llm container, and chatqna answers again.
    COMPOSE_CMD="${COMPOSE[*]} -p $PROJECT" python3 scripts/docker/prometheus_check.py \
        "http://127.0.0.1:$PROMETHEUS_HOST_PORT" "http://127.0.0.1:$CHATQNA_HOST_PORT"
    # `up` fails loudly when chatqna never answers: here a port nothing listens on.
    if err=$(wait_healthy "$PROJECT" "$(free_port)" 3 2>&1 >/dev/null); then
        echo "compose test: wait_healthy passed with nothing listening" >&2
        exit 1
    fi
    grep -q "did not become healthy within 3 s" <<<"$err" || { echo "compose test: no clear failure: $err" >&2; exit 1; }
    echo "compose test: an unhealthy pipeline fails loudly, naming its containers"
    "${COMPOSE[@]}" -p "$PROJECT" "${ALL_PROFILES[@]}" down -v --remove-orphans
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
