#!/usr/bin/env bash
# Build llama.cpp's own HTTP server (llama-server) from the llama.cpp sources vendored in the
# same llama-cpp-python sdist that scripts/bench/llama-cpp-env.sh builds, so the served benchmark's
# anchor is the very library the kernel benchmark measures. The served anchor of
# scripts/bench/llm.sh (continuous batching over parallel slots, OpenAI routes).
#
#   scripts/bench/llama-server-build.sh            # prints the llama-server path (last line of stdout)
#
# The sdist comes from PyPI (pip download); cmake and ninja from the venv llama-cpp-env.sh made.
# Output under $REPO/.llama-server/ (git-ignored); nothing is rebuilt when the binary exists
# for the pinned version. Built with -DGGML_NATIVE=ON: not portable to other CPUs.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv-llamacpp}"
OUT="${LLAMA_SERVER_DIR:-$REPO_ROOT/.llama-server}"
VERSION="$(sed -n 's/^LLAMA_CPP_PYTHON_VERSION="\(.*\)"$/\1/p' "$REPO_ROOT/scripts/bench/llama-cpp-env.sh")"

log() { echo "==> $*" >&2; }
die() {
  echo "llama-server-build: ERROR: $*" >&2
  exit 1
}

[[ -n "$VERSION" ]] || die "could not read the pinned llama-cpp-python version from llama-cpp-env.sh"
bin="$OUT/$VERSION/build/bin/llama-server"
if [[ -x "$bin" ]]; then
  log "llama-server from llama-cpp-python $VERSION already built"
  echo "$bin"
  exit 0
fi

bash "$REPO_ROOT/scripts/bench/llama-cpp-env.sh" >/dev/null
mkdir -p "$OUT/$VERSION"
cd "$OUT/$VERSION"
if [[ ! -d src ]]; then
  log "downloading the llama-cpp-python $VERSION sdist"
  rm -rf dl && mkdir dl
  "$VENV/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d dl >&2 || die "pip download of the sdist failed (is PyPI reachable?)"
  tar xzf dl/llama_cpp_python-"$VERSION".tar.gz
  mv "llama_cpp_python-$VERSION/vendor/llama.cpp" src
  rm -rf dl "llama_cpp_python-$VERSION"
fi
[[ -f src/tools/server/CMakeLists.txt ]] || die "the sdist carries no tools/server"

jobs="$(nproc 2>/dev/null || echo 2)"
log "building llama-server with $jobs jobs (takes minutes)"
start=$SECONDS
# Without AMX, as scripts/bench/llama-cpp-env.sh builds the library (ggml's AMX path crashed here).
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
PATH="$VENV/bin:$PATH" cmake -S src -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2 || die "cmake configure failed"
PATH="$VENV/bin:$PATH" cmake --build build --target llama-server -j "$jobs" >&2 ||
  die "building llama-server failed; see the compiler output above"
[[ -x "$bin" ]] || die "the build made no $bin"
log "built in $((SECONDS - start)) s"
echo "$bin"
