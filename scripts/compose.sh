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
#   scripts/compose.sh swarm-up    the Swarm stack (deploy/swarm/stack.yml: two replicas each
#                                  behind HAProxy; `docker swarm init` when in no swarm)
#   scripts/compose.sh swarm-down  remove it (and leave a swarm that swarm-up created)
#   scripts/compose.sh swarm-test  the stack on a free port, small models: an llm replica killed
#                                  and chatqna updated under load (scripts/docker/swarm_check.py),
#                                  then removed, the engine's swarm state left as found
#   scripts/compose.sh swarm-bench the stack with the default models (release binaries):
#                                  throughput with 1 and 2 llm replicas, chatqna's own time
#                                  per request at c=64 (scripts/bench/swarm.py)
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

# Swarm: join (init) only when this engine is in no swarm, and remember it, so that leaving
# restores the engine as it was (docker_gwbridge, which `swarm init` creates, goes too).
SWARM_MARK="${XDG_RUNTIME_DIR:-/tmp}/comps-rs-swarm-created"
SWARM_CREATED=0
GWBRIDGE_BEFORE=0
swarm_join() {
    docker network inspect docker_gwbridge >/dev/null 2>&1 && GWBRIDGE_BEFORE=1
    if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
        echo "docker swarm init (this engine was in no swarm; it leaves again afterwards)"
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        SWARM_CREATED=1
        echo "$GWBRIDGE_BEFORE" >"$SWARM_MARK"
    fi
}

# Remove a stack and wait until its containers are gone; then its volumes.
swarm_remove() {
    local stack=$1
    docker stack rm "$stack" >/dev/null 2>&1 || true
    for _ in $(seq 1 120); do
        [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
        sleep 1
    done
    for _ in $(seq 1 30); do
        docker network ls -q --filter "label=com.docker.stack.namespace=$stack" | grep -q . || break
        sleep 1
    done
    docker volume ls -q --filter "label=com.docker.stack.namespace=$stack" | xargs -r docker volume rm >/dev/null
}

swarm_restore() {
    [ "$SWARM_CREATED" = 1 ] || return 0
    [ -f "$SWARM_MARK" ] && GWBRIDGE_BEFORE="$(cat "$SWARM_MARK")"
    docker swarm leave --force >/dev/null
    if [ "$GWBRIDGE_BEFORE" = 0 ]; then
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
    fi
    rm -f "$SWARM_MARK"
    echo "left the swarm this script created"
}

# Wait until the stack's entry point answers a health check, at most SECS seconds.
wait_entry() {
    local port=$1 secs=$2
    for _ in $(seq 1 "$secs"); do
        curl -fsS "localhost:$port/v1/health_check" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "the stack's entry point on port $port did not answer within $secs s: docker service ls; docker service logs NAME" >&2
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
swarm-up | swarm-test | swarm-bench)
    # The Swarm stack of deploy/swarm/stack.yml on this node. `swarm-test` deploys it on a free
    # port with the small models, runs scripts/docker/swarm_check.py (an llm replica killed under
    # load, a rolling update of chatqna under load, the llm replicas' shares), then removes the
    # stack and leaves the engine's swarm state as it found it.
    if [ "$1" = swarm-bench ]; then
        STACK="comps-swarm-bench-$$"
        export CHATQNA_HOST_PORT="$(free_port)"
    elif [ "$1" = swarm-test ]; then
        STACK="comps-swarm-test-$$"
        export CHATQNA_HOST_PORT="$(free_port)"
        # Small models: eleven tasks share this machine's cores.
        export EMBEDDING_MODEL=/models/all-MiniLM-L6-v2 LLM_MODEL_PATH=/models/SmolLM2-135M-Instruct
        export EMBEDDING_PASSAGE_PROMPT_NAME="" EMBEDDING_QUERY_PROMPT_NAME=""
    else
        STACK="${COMPS_STACK_NAME:-comps-rs}"
    fi
    PROJECT="$STACK"
    export COMPS_MODELS_DIR="${COMPS_MODELS_DIR:-$PWD/models}"
    case "$COMPS_MODELS_DIR" in /*) ;; *) COMPS_MODELS_DIR="$PWD/$COMPS_MODELS_DIR" ;; esac
    stage
    docker build -q -f docker/Dockerfile.haproxy --build-arg BASE_IMAGE="$BASE" -t comps-rs/haproxy:latest . >/dev/null
    swarm_join
    if [ "$1" != swarm-up ]; then
        trap 'swarm_remove "$STACK"; swarm_restore' EXIT
    fi
    docker stack deploy -c deploy/swarm/stack.yml "$STACK"
    if [ "$1" = swarm-up ]; then
        wait_entry "${CHATQNA_HOST_PORT:-8888}" 420
        echo "ChatQnA on Swarm: http://localhost:${CHATQNA_HOST_PORT:-8888} (scripts/compose.sh swarm-down removes it)"
        exit 0
    fi
    if [ "$1" = swarm-bench ]; then
        mkdir -p bench-results
        python3 scripts/bench/swarm.py "$STACK" "http://127.0.0.1:$CHATQNA_HOST_PORT" \
            --out "bench-results/swarm-$(date +%Y%m%d-%H%M%S).json"
    else
        python3 scripts/docker/swarm_check.py "$STACK" "http://127.0.0.1:$CHATQNA_HOST_PORT"
    fi
    swarm_remove "$STACK"
    swarm_restore
    trap - EXIT
    echo "$1: done (stack removed, swarm state as found)"
    ;;
swarm-down)
    STACK="${COMPS_STACK_NAME:-comps-rs}"
    swarm_remove "$STACK"
    # A swarm that `swarm-up` created is left; one that was there before stays.
    if [ -f "$SWARM_MARK" ]; then
        SWARM_CREATED=1 swarm_restore
        rm -f "$SWARM_MARK"
    fi
    ;;
*)
    echo "usage: $0 up|down|test|swarm-up|swarm-down|swarm-test|swarm-bench" >&2
    exit 2
    ;;
esac
