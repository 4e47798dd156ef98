#!/usr/bin/env bash
# Benchmark: prefill and decode tokens/s of SmolLM2-135M-Instruct at Q4_1 (as packaged), Q4_0 and
# Q8_0 (requantized) and of Qwen2.5-Coder-0.5B-Instruct's Q4_K_M file (Q5_0, Q8_0, Q4_K, Q6_K
# matrices), our backends (native and candle) beside llama.cpp (llama-cpp-python, built from
# PyPI by scripts/bench/llama-cpp-env.sh) on the same files, in one run, at 1 and 2 threads. Both sides
# prefill the same 128-token prompt and decode 128 tokens after it; llama.cpp runs with flash
# attention on and off and each of its figures is the better one. Native lines also give the decode
# of four sequences batched in one forward pass per token (continuous batching at the model).
# Then the served benchmark: comps-llm beside llama-server (scripts/bench/llama-server-build.sh, the same
# llama.cpp) on the Qwen file, streamed clients at c=1, 4 and 16, 2 threads (scripts/bench/llm_served.py).
# Usage: scripts/bench/llm.sh [THREADS...]     (default: 1 2; BENCH_SERVED=0 skips the served part)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=("${@:-1 2}")
read -r -a threads <<<"${threads[*]}"
bash scripts/fetch-models.sh SmolLM2-135M-Instruct Qwen2.5-Coder-0.5B-Instruct
SMOL=models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
QWEN=models/Qwen2.5-Coder-0.5B-Instruct/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf
PY="$(bash scripts/bench/llama-cpp-env.sh | tail -n 1)"
"$PY" scripts/bench/llamacpp_requantize.py >/dev/null
[[ -n "${BENCH_NO_BUILD:-}" ]] || cargo build --release --locked -p comps-models --example llm_bench -p comps-llm --bins

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in "${threads[@]}"; do
  echo "== $t thread(s): 128-token prompt, 128 decoded tokens after it, median of 3"
  : >"$out"
  for q in Q4_1 Q4_0 Q8_0; do
    case $q in Q4_1) arg=none ;; Q4_0) arg=q4_0 ;; Q8_0) arg=q8_0 ;; esac
    RAYON_NUM_THREADS=$t target/release/examples/llm_bench "$SMOL" "$arg" | tee -a "$out"
  done
  # auto: candle gets its fastest configuration (Q5_0 requantized to Q8_0), native the file as it is.
  RAYON_NUM_THREADS=$t target/release/examples/llm_bench "$QWEN" auto | tee -a "$out"
  "$PY" scripts/bench/llamacpp_bench.py --threads "$t" | tee -a "$out"
  # Ratios ours / llama.cpp per file and backend.
  awk -v t="$t" '{ kind=$1; q=$2; pre=$4; dec=$7; if (kind=="llama.cpp") { lp[q]=pre; ld[q]=dec } else { k=kind " " q; op[k]=pre; od[k]=dec; oq[k]=q } }
       END { for (k in od) { q=oq[k]; if (q in ld) printf "ratio %st  %-14s prefill %6.2fx          decode %6.2fx  (/ llama.cpp)\n", t, k, op[k]/lp[q], od[k]/ld[q] } }' "$out" | sort
done

if [[ "${BENCH_SERVED:-1}" != 0 ]]; then
  SERVER="$(bash scripts/bench/llama-server-build.sh | tail -n 1)"
  python3 scripts/bench/llm_served.py --llama-server "$SERVER" --model-dir models/Qwen2.5-Coder-0.5B-Instruct \
    --gguf "$QWEN" --threads 2
fi
