"""llama.cpp prefill and decode speed, the llama.cpp half of scripts/bench/llm.sh: SmolLM2-135M-
Instruct at Q4_1, Q4_0 and Q8_0 and Qwen2.5-Coder-0.5B-Instruct's Q4_K_M file. Run with the venv
from scripts/bench/llama-cpp-env.sh:

    .venv-llamacpp/bin/python scripts/bench/llamacpp_bench.py [--json] [--threads 2] [--quants Q4_1,Q4_K_M]

Per file, one line on stdout:
    llama.cpp  Q8_0    prefill   1234.5 tok/s  decode   123.4 tok/s  (flash attention on/off)
(or, with --json, a single JSON object). Q4_0/Q8_0 are the files written by
scripts/bench/llamacpp_requantize.py.

prefill: a 128-token prompt evaluated in one llama_decode call (one batch), KV cache emptied
before each run. decode: after that same 128-token prompt (the context our llm_bench decodes
in), 128 greedy tokens (argmax of the logits), one llama_decode per token; the time covers
those 128 calls and the argmax, not the prompt. Each is the median of --repeats runs after one
untimed warm-up run. With --flash-attn best (the default) both settings run and each figure is
the better of the two, the setting named on the line.

Run it on an otherwise idle machine: ggml's worker threads spin at barriers, so when another
process takes one of the cores, throughput drops by 10x or more (a warning goes to stderr when
the cores are busy before the run starts).
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_DIR = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct")
REQUANTIZED_DIR = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct-requantized")
QWEN = os.path.join(ROOT, "models", "Qwen2.5-Coder-0.5B-Instruct", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf")
PREFILL_TOKENS = 128
DECODE_TOKENS = 128
# Ordinary English; tokenized and cut to exactly PREFILL_TOKENS tokens.
FILLER = ("The history of lighthouses begins with fires lit on hilltops to guide ships into harbor. "
          "Over centuries these became towers with lamps, lenses and clockwork that turned the light, "
          "and keepers lived beside them to trim wicks, wind the mechanism and log the weather. ") * 8


def model_path(q):
    if q == "Q4_K_M":
        if not os.path.isfile(QWEN):
            sys.exit(f"error: {QWEN} is missing; run `bash scripts/fetch-models.sh Qwen2.5-Coder-0.5B-Instruct`")
        return QWEN
    path = os.path.join(MODEL_DIR if q == "Q4_1" else REQUANTIZED_DIR, f"SmolLM2-135M-Instruct.{q}.gguf")
    if not os.path.isfile(path):
        hint = ("bash scripts/fetch-models.sh SmolLM2-135M-Instruct" if q == "Q4_1" else
                "bash scripts/fetch-models.sh SmolLM2-135M-Instruct, then "
                ".venv-llamacpp/bin/python scripts/bench/llamacpp_requantize.py")
        sys.exit(f"error: {path} is missing; run `{hint}`")
    return path


def cpu_busy(seconds=0.5):
    """Fraction of all CPU time spent non-idle over `seconds` (we sleep meanwhile), or None."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except OSError:
        return None
    return 1 - (i1 - i0) / max(1, t1 - t0)


def last_logits(llm):
    import llama_cpp
    import numpy as np

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def prefill_once(llm, ids):
    llm.reset()  # n_tokens = 0: eval() first removes every KV cell from position 0 on
    t = time.perf_counter()
    llm.eval(ids)  # n_batch >= len(ids): a single llama_decode call
    return len(ids) / (time.perf_counter() - t)


def decode_once(llm, prompt_ids):
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    t = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        llm.eval([int(np.argmax(last_logits(llm)))])
    return DECODE_TOKENS / (time.perf_counter() - t)


def bench(q, threads, repeats, flash_attn):
    from llama_cpp import Llama

    llm = Llama(model_path=model_path(q), n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                seed=1234, logits_all=False, verbose=False, flash_attn=flash_attn)
    ids = llm.tokenize(FILLER.encode(), add_bos=False, special=False)[:PREFILL_TOKENS]
    assert len(ids) == PREFILL_TOKENS, "FILLER is too short"
    prefill_once(llm, ids)  # warm-up: page in the weights, allocate compute buffers
    decode_once(llm, ids)
    pre = [prefill_once(llm, ids) for _ in range(repeats)]
    dec = [decode_once(llm, ids) for _ in range(repeats)]
    llm.close()
    return {"quant": q, "file": os.path.basename(model_path(q)), "flash_attn": flash_attn,
            "prefill_tok_s": statistics.median(pre), "decode_tok_s": statistics.median(dec),
            "prefill_runs": pre, "decode_runs": dec}


def best_of(q, threads, repeats, mode):
    """One setting, or both with each figure the better one."""
    settings = {"on": [True], "off": [False], "best": [False, True]}[mode]
    runs = [bench(q, threads, repeats, fa) for fa in settings]
    pre = max(runs, key=lambda r: r["prefill_tok_s"])
    dec = max(runs, key=lambda r: r["decode_tok_s"])
    return {"quant": q, "file": pre["file"], "prefill_tok_s": pre["prefill_tok_s"], "decode_tok_s": dec["decode_tok_s"],
            "prefill_flash_attn": pre["flash_attn"], "decode_flash_attn": dec["flash_attn"], "runs": runs}


def main():
    ap = argparse.ArgumentParser(description="llama.cpp prefill/decode tokens/s for SmolLM2-135M-Instruct")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text lines")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quants", default="Q4_1,Q4_0,Q8_0,Q4_K_M",
                    help="comma-separated, e.g. Q4_1,Q8_0 (Q4_K_M is the Qwen file, the others SmolLM2's)")
    ap.add_argument("--flash-attn", choices=["best", "on", "off"], default="best")
    args = ap.parse_args()
    quants = [q.strip() for q in args.quants.split(",") if q.strip()]
    for q in quants:
        model_path(q)  # fail before any timing if a file is missing
    busy = cpu_busy()
    if busy is not None and busy > 0.2:
        print(f"llamacpp_bench: warning: the CPUs are {busy:.0%} busy with other processes; "
              "llama.cpp figures will be far too low", file=sys.stderr)
    results = []
    for q in quants:
        r = best_of(q, args.threads, args.repeats, args.flash_attn)
        results.append(r)
        if not args.json:
            fa = lambda on: "on" if on else "off"  # noqa: E731
            print(f"llama.cpp  {q:<7} prefill {r['prefill_tok_s']:8.1f} tok/s  decode {r['decode_tok_s']:7.1f} tok/s"
                  f"  (flash attention {fa(r['prefill_flash_attn'])}/{fa(r['decode_flash_attn'])})", flush=True)
    if args.json:
        print(json.dumps({"engine": "llama.cpp", "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
                          "threads": args.threads, "flash_attn": args.flash_attn, "prefill_tokens": PREFILL_TOKENS, "decode_tokens": DECODE_TOKENS,
                          "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
