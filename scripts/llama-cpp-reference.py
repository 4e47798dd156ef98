"""Greedy reference continuations of SmolLM2-135M-Instruct from llama.cpp, written as a JSON
fixture for services/llm/tests/fidelity.rs. Run with the venv from scripts/llama-cpp-env.sh:

    .venv-llamacpp/bin/python scripts/llama-cpp-reference.py                  # Q4_1 -> llamacpp-greedy.json
    .venv-llamacpp/bin/python scripts/llama-cpp-reference.py \\
        --quant models/SmolLM2-135M-Instruct-requantized/SmolLM2-135M-Instruct.Q8_0.gguf \\
        --out services/llm/tests/fixtures/llamacpp-greedy-q8_0.json

(the Q8_0 file comes from scripts/bench/llamacpp_requantize.py).

Decoding is pure argmax over the logits of the last position (no sampler, no penalties), one
token per llama_decode after the prompt, for MAX_NEW tokens or until <|im_end|> (id 2), which is
then the last generated id. generated_text is llama.cpp's detokenization of generated_ids with
control tokens rendered as nothing (so without the final <|im_end|>). margins[i] is the gap
between the best and second-best logit at step i: where it is tiny, any other correct
implementation may pick the other token.

The KV cache is kept in f32 and flash attention is off, as in the candle engine: llama.cpp's
default f16 cache alone moves this model's logits by up to ~0.3, enough to flip near-ties.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(ROOT, "services", "llm", "tests", "fixtures", "llamacpp-greedy.json")
MAX_NEW = 48
IM_END = 2
GGML_TYPE_F32 = 0
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTIONS = [
    "What is 2+2?",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three colors.",
]


def chatml(user):
    # What the model's chat template renders for [system, user] with add_generation_prompt=True.
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def greedy(llm, prompt_ids):
    import llama_cpp
    import numpy as np

    llm.reset()  # n_tokens = 0; the next eval clears the KV cache from position 0
    llm.eval(prompt_ids)
    out, margins = [], []
    while len(out) < MAX_NEW:
        # Llama.eval() no longer copies logits into llm.scores (unless logits_all), so read the
        # last decoded position's logits straight from the context.
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        tok = int(np.argmax(logits))
        second = float(np.partition(logits, -2)[-2])
        out.append(tok)
        margins.append(round(float(logits[tok]) - second, 4))
        if tok == IM_END:
            break
        llm.eval([tok])
    return out, margins


def main():
    ap = argparse.ArgumentParser(description="llama.cpp greedy fixture for SmolLM2-135M-Instruct")
    ap.add_argument("--quant", default=DEFAULT_MODEL, help="GGUF file (default: the packaged Q4_1)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON fixture to write")
    args = ap.parse_args()
    if not os.path.isfile(args.quant):
        hint = ("run `bash scripts/fetch-models.sh SmolLM2-135M-Instruct`" if args.quant == DEFAULT_MODEL else
                "run scripts/fetch-models.sh, then scripts/bench/llamacpp_requantize.py for Q8_0/Q4_0")
        sys.exit(f"error: {args.quant} is missing; {hint}")
    from llama_cpp import Llama

    llm = Llama(model_path=args.quant, n_ctx=2048, n_threads=2, n_threads_batch=2, n_batch=512, seed=1234,
                logits_all=False, verbose=False, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False)
    cases = []
    for q in QUESTIONS:
        prompt = chatml(q)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        gen, margins = greedy(llm, ids)
        text = llm.detokenize(gen, special=False).decode("utf-8", errors="replace")
        cases.append({"prompt": prompt, "prompt_ids": ids, "generated_ids": gen, "generated_text": text,
                      "margins": margins})
        print(f"[{len(ids)} prompt tokens, {len(gen)} generated] {q!r} -> {text!r}", file=sys.stderr)
    fixture = {
        "model": os.path.basename(args.quant),
        "model_sha256": sha256_file(args.quant),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "max_new_tokens": MAX_NEW,
        "kv_cache": "f32",
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(args.out)


if __name__ == "__main__":
    main()
