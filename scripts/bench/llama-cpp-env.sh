#!/usr/bin/env bash
# Create a Python venv with llama-cpp-python (llama.cpp built from the PyPI sdist) for the
# reference/benchmark scripts (scripts/fixtures/llama-cpp-reference.py, scripts/bench/llamacpp_*.py).
#
#   scripts/bench/llama-cpp-env.sh                 # creates $REPO/.venv-llamacpp, prints its python
#   VENV=/some/where scripts/bench/llama-cpp-env.sh
#   PYTHON=python3.11 scripts/bench/llama-cpp-env.sh
#
# Idempotent: when the venv already has llama-cpp-python at the pinned version, nothing is
# rebuilt. llama.cpp is compiled with -DGGML_NATIVE=ON (AVX-512 etc. of *this* CPU), so the
# venv is not portable to other machines; delete it to force a rebuild.
#
# Only stdout is the python path (last line), everything else goes to stderr, so that
#   PY="$(scripts/bench/llama-cpp-env.sh)"
# works.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv-llamacpp}"
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
# Build helpers from PyPI (the machine has no system cmake/ninja).
BUILD_TOOLS=("cmake>=3.21,<5" "ninja")
# Explicit -mno flags win over -march=native in GCC and Clang, whatever their order.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

log() { echo "==> $*" >&2; }
die() {
  echo "llama-cpp-env: ERROR: $*" >&2
  exit 1
}
trap 'echo "llama-cpp-env: FAILED (line $LINENO, exit $?)" >&2' ERR

installed_version() {
  # Prints the installed llama-cpp-python version, or nothing. Reads package metadata only:
  # importing llama_cpp would load the shared library, which is slower and may fail noisily.
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' \
    2>/dev/null || true
}

main() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
  command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 ||
    die "a C and C++ compiler are needed to build llama.cpp (apt-get install build-essential)"

  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create venv (apt-get install python3-venv?)"
  fi

  local have
  have="$(installed_version)"
  if [[ "$have" == "$LLAMA_CPP_PYTHON_VERSION" ]]; then
    log "llama-cpp-python==$have already installed in $VENV, nothing to do"
  else
    [[ -n "$have" ]] && log "llama-cpp-python $have installed, replacing with $LLAMA_CPP_PYTHON_VERSION"
    log "installing build tools: ${BUILD_TOOLS[*]}"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip "${BUILD_TOOLS[@]}" >&2 ||
      die "pip install of build tools failed (is PyPI reachable?)"

    # The venv's bin/ first on PATH so the build (scikit-build-core) finds its cmake and ninja.
    # GGML_NATIVE=ON: -march=native, less AMX: on a Sapphire Rapids VM, ggml's AMX path
    # crashed in llama_decode (segfault, llama-cpp-python 0.3.36), and our kernels are AVX-512
    # VNNI, the class of the anchor without it. CMAKE_BUILD_PARALLEL_LEVEL: one job per core.
    local jobs start
    jobs="$(nproc 2>/dev/null || echo 2)"
    log "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION from source with $jobs jobs (takes minutes)"
    start=$SECONDS
    PATH="$VENV/bin:$PATH" \
      CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'}" \
      CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
      "$VENV/bin/python" -m pip install --no-cache-dir --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2 ||
      die "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed; see the compiler output above"
    log "built and installed in $((SECONDS - start)) s"
    have="$(installed_version)"
    [[ "$have" == "$LLAMA_CPP_PYTHON_VERSION" ]] ||
      die "after install, llama-cpp-python version is '$have', expected $LLAMA_CPP_PYTHON_VERSION"
  fi

  # Check the shared library actually loads on this machine.
  "$VENV/bin/python" -c 'import llama_cpp' >&2 ||
    die "llama_cpp does not import; delete $VENV and run again"
  echo "$VENV/bin/python"
}

main "$@"
