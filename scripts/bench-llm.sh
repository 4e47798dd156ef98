#!/usr/bin/env bash
# Benchmark: prefill and decode tokens/s of SmolLM2-135M-Instruct at Q4_1 (as packaged), Q4_0
# and Q8_0 (requantized), our backends (native and candle) beside llama.cpp (llama-cpp-python,
# built from PyPI by scripts/llama-cpp-env.sh) on the same weights, in one run, 2 threads each.
# Usage: scripts/bench-llm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh SmolLM2-135M-Instruct
GGUF=models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
PY="$(bash scripts/llama-cpp-env.sh | tail -n 1)"
"$PY" scripts/bench/llamacpp_requantize.py >/dev/null
cargo build --release -p comps-llm --example llm_bench

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== SmolLM2-135M-Instruct, 128-token prompt, 128 decoded tokens, median of 3"
for q in Q4_1 Q4_0 Q8_0; do
  case $q in Q4_1) arg=none ;; Q4_0) arg=q4_0 ;; Q8_0) arg=q8_0 ;; esac
  target/release/examples/llm_bench "$GGUF" "$arg" | tee -a "$out"
done
"$PY" scripts/bench/llamacpp_bench.py | tee -a "$out"
# Ratios ours / llama.cpp per quantization and backend.
awk '{ kind=$1; q=$2; pre=$4; dec=$7; if (kind=="llama.cpp") { lp[q]=pre; ld[q]=dec } else { k=kind " " q; op[k]=pre; od[k]=dec; oq[k]=q } }
     END { for (k in od) { q=oq[k]; if (q in ld) printf "ratio      %-12s prefill %6.2fx          decode %6.2fx  (/ llama.cpp)\n", k, op[k]/lp[q], od[k]/ld[q] } }' "$out"
