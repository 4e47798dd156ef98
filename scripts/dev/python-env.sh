#!/usr/bin/env bash
# Python environment for the PyTorch reference side of the embedding service
# (scripts/fixtures/gen-embedding-fixture.py, scripts/bench/embedding_torch.py): a venv at .venv/ in the
# repo root with CPU PyTorch and sentence-transformers, everything from PyPI, every version
# pinned.
#
#   scripts/dev/python-env.sh            # create or check .venv
#   scripts/dev/python-env.sh --force    # reinstall the pinned set even if the stamp matches
#   .venv/bin/python scripts/fixtures/gen-embedding-fixture.py
#
# Why the odd install: PyPI's Linux x86_64 torch wheel is built with CUDA and depends on ~20
# nvidia-*/cuda-*/triton packages. Installed normally that is ~5 GB. We install every package
# with --no-deps from the explicit list below, which has only the NVIDIA libraries that torch's
# shared objects name as DT_NEEDED (without them `import torch` fails even on CPU) and leaves out
# the ones only used on a GPU or by torch.compile: triton, cuda-bindings, cuda-pathfinder,
# cuda-toolkit, nvidia-cuda-cccl, nvidia-cusolver (only in the lazily loaded
# libtorch_cuda_linalg.so), nvidia-nvtx. `pip check` therefore reports those as missing; that
# is expected and is the only thing it may report.
#
# Idempotent: a stamp file in .venv records the pin list it was built from; when it matches and
# the smoke test passes, nothing is installed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.comps-python-env"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "==> $*" >&2; }
die() {
  echo "python-env: ERROR: $*" >&2
  exit 1
}

# Installed with --no-deps, in this order. Resolved with pip for CPython 3.11 on
# manylinux x86_64 (torch 2.15.0 is the cu13.2 build: torch.__version__ == "2.15.0+cu132").
read -r -d '' PINS <<'EOF' || true
# torch and the pure-Python packages it imports
torch==2.15.0
filelock==4.3.1
typing_extensions==4.16.0
sympy==1.14.0
mpmath==1.3.0
networkx==3.6.1
jinja2==3.1.6
MarkupSafe==3.0.4
fsspec==2026.9.0
setuptools==84.2.1
# NVIDIA libraries that libtorch_*.so link against (needed to load, never used on CPU)
nvidia-cuda-runtime==13.2.86
nvidia-cuda-cupti==13.2.86
nvidia-cuda-nvrtc==13.2.86
nvidia-nvjitlink==13.5.37
nvidia-cublas==13.4.1.3
nvidia-cufft==12.2.0.57
nvidia-cufile==1.17.1.22
nvidia-cusparse==12.7.10.12
nvidia-cusparselt-cu13==0.8.1
nvidia-cudnn-cu13==9.26.0.51
nvidia-nccl-cu13==2.30.7
nvidia-nvshmem-cu13==3.7.2
# sentence-transformers and its dependency closure (less torch)
sentence-transformers==6.2.0
transformers==5.24.0
tokenizers==0.23.3
huggingface_hub==2.4.0
safetensors==0.8.0
numpy==2.4.6
scipy==1.17.1
scikit-learn==1.9.1
joblib==1.6.0
cloudpickle==3.1.3
threadpoolctl==3.8.0
narwhals==2.29.0
tqdm==4.70.1
regex==2026.11.19
PyYAML==6.0.4
packaging==26.4
hf-xet==1.8.0
httpx2==2.16.2
httpcore2==2.16.2
h11==0.16.0
anyio==4.16.0
idna==3.20
truststore==0.10.5
click==8.5.1
typer==0.29.2
pydantic==2.14.4
pydantic_core==2.50.5
annotated-types==0.8.0
typing-inspection==0.4.5
annotated-doc==0.0.7
rich==15.0.0
markdown-it-py==4.3.0
mdurl==0.1.2
Pygments==2.21.0
shellingham==1.5.4
EOF

# Packages torch declares that we deliberately do not install (see the header).
# nvidia-nvshmem asks for nvidia-cuda-cccl (CUDA C++ headers) which nothing needs at run time.
OMITTED_RE='^(torch|nvidia-[a-z0-9-]+) [^ ]+ requires (triton|cuda-bindings|cuda-toolkit|cuda-pathfinder|nvidia-cuda-cccl|nvidia-cusolver|nvidia-nvtx),'

smoke_test() {
  "$VENV/bin/python" - <<'EOF'
import torch
x = torch.ones(2) @ torch.ones(2)
assert float(x) == 2.0, x
assert not torch.cuda.is_available()
import sentence_transformers, transformers, tokenizers
print(f"torch {torch.__version__} (threads {torch.get_num_threads()}), ones(2)@ones(2) = {float(x)}, "
      f"cuda available: {torch.cuda.is_available()}; sentence-transformers {sentence_transformers.__version__}, "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
EOF
}

main() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
  local pyver want_stamp
  pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  [[ "$pyver" == "3.11" ]] || log "warning: $PYTHON is Python $pyver; the pins were resolved for 3.11"
  want_stamp="python=$pyver pins=$(printf '%s\n' "$PINS" | sha256sum | cut -c1-16)"

  if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
    log "$VENV is already set up ($want_stamp); checking it imports"
    smoke_test || die "$VENV is stamped complete but the smoke test failed; rerun with --force"
    return 0
  fi

  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV with $PYTHON (Python $pyver)"
    "$PYTHON" -m venv "$VENV" || die "could not create venv at $VENV"
  fi
  rm -f "$STAMP"

  local req
  req="$(mktemp)"
  # shellcheck disable=SC2064
  trap "rm -f '$req'" EXIT
  printf '%s\n' "$PINS" >"$req"
  log "installing $(grep -cv '^#' "$req") pinned packages with --no-deps (torch alone is ~1 GB unpacked)"
  local t0=$SECONDS
  # No pip cache: it would keep another ~2.5 GB of wheels around for nothing.
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --no-cache-dir --no-deps \
    --only-binary=:all: --progress-bar on -r "$req" ||
    die "pip install failed (see above); the venv is left as it is, rerun to retry"
  log "pip install took $((SECONDS - t0)) s"

  log "pip check (torch's GPU-only dependencies are expected to be missing)"
  local unexpected
  unexpected="$("$VENV/bin/python" -m pip check 2>&1 | grep -Ev "$OMITTED_RE|^No broken requirements" || true)"
  [[ -z "$unexpected" ]] || die "pip check found problems other than the omitted GPU packages:
$unexpected"

  log "smoke test"
  smoke_test || die "the environment does not work (see above)"
  echo "$want_stamp" >"$STAMP"
  log "done: $VENV uses $(du -sh "$VENV" | cut -f1) of disk"
}

main "$@"
