"""Greedy reference continuations from llama.cpp, written as a JSON fixture for
services/llm/tests/fidelity.rs. Run with the venv from scripts/llama-cpp-env.sh:

    .venv-llamacpp/bin/python scripts/llama-cpp-reference.py                  # Q4_1 -> llamacpp-greedy.json
    .venv-llamacpp/bin/python scripts/llama-cpp-reference.py \\
        --quant models/SmolLM2-135M-Instruct-requantized/SmolLM2-135M-Instruct.Q8_0.gguf \\
        --out services/llm/tests/fixtures/llamacpp-greedy-q8_0.json
    .venv-llamacpp/bin/python scripts/llama-cpp-reference.py --preset qwen   # -> llamacpp-greedy-qwen.json

(the Q8_0 file comes from scripts/bench/llamacpp_requantize.py). The qwen preset runs
Qwen2.5-Coder-0.5B-Instruct's Q4_K_M file (Q5_0, Q8_0, Q4_K and Q6_K matrices) on its own
system prompt, the same questions and one retrieval-style prompt of a few hundred tokens.

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
FIXTURES = os.path.join(ROOT, "services", "llm", "tests", "fixtures")
PRESETS = {
    "smollm2": {
        "model": os.path.join(ROOT, "models", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "out": os.path.join(FIXTURES, "llamacpp-greedy.json"),
        "system": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        "im_end": 2,
        "fetch": "SmolLM2-135M-Instruct",
    },
    "qwen": {
        "model": os.path.join(ROOT, "models", "Qwen2.5-Coder-0.5B-Instruct", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"),
        "out": os.path.join(FIXTURES, "llamacpp-greedy-qwen.json"),
        "system": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "im_end": 151645,
        "fetch": "Qwen2.5-Coder-0.5B-Instruct",
    },
}
MAX_NEW = 48
GGML_TYPE_F32 = 0
# A retrieval-style question over a passage, as ChatQnA sends (a longer prompt: several
# activation rows per weight pass, and attention over a few hundred positions).
CONTEXT = (
    "Answer the question based only on the following context.\n\nContext:\n"
    "The Harbor Street Lighthouse was built in 1887 by the engineer Miriam Okafor, who designed its "
    "lens housing to survive winter storms on the northern coast. The tower is 31 metres tall and its "
    "light can be seen 22 nautical miles out to sea. In 1954 the lamp was electrified, and in 1991 the "
    "keeper's cottage became a small museum about shipwrecks of the region. The museum is open from "
    "April to October, every day except Monday, and entry is free for children under twelve. Visitors "
    "climb 168 steps to reach the gallery, where a bronze plaque lists the eleven keepers who served "
    "there. The last keeper, Tomas Reyes, retired in 1989 after thirty-two years of service.\n\n"
    "Question: Who designed the lighthouse, and how many steps lead to the gallery?"
)
QUESTIONS = [
    "What is 2+2?",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three colors.",
]


# Longer answers for the qwen preset, whose short answers end after a few tokens.
MORE_QUESTIONS = [
    "Write a Python function that reverses a string.",
    "Describe the water cycle.",
    "What is a hash map and when would you use one?",
]


def questions(preset):
    return QUESTIONS + (MORE_QUESTIONS + [CONTEXT] if preset == "qwen" else [])


def chatml(system, user):
    # What the model's chat template renders for [system, user] with add_generation_prompt=True.
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def greedy(llm, prompt_ids, im_end):
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
        if tok == im_end:
            break
        llm.eval([tok])
    return out, margins


def main():
    ap = argparse.ArgumentParser(description="llama.cpp greedy fixture for SmolLM2 or Qwen2.5")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="smollm2", help="model and prompts")
    ap.add_argument("--quant", help="GGUF file (default: the preset's packaged file)")
    ap.add_argument("--out", help="JSON fixture to write (default: the preset's)")
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    quant = args.quant or preset["model"]
    out = args.out or preset["out"]
    if not os.path.isfile(quant):
        hint = (f"run `bash scripts/fetch-models.sh {preset['fetch']}`" if args.quant is None else
                "run scripts/fetch-models.sh, then scripts/bench/llamacpp_requantize.py for Q8_0/Q4_0")
        sys.exit(f"error: {quant} is missing; {hint}")
    from llama_cpp import Llama

    llm = Llama(model_path=quant, n_ctx=2048, n_threads=2, n_threads_batch=2, n_batch=512, seed=1234,
                logits_all=False, verbose=False, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False)
    cases = []
    for q in questions(args.preset):
        prompt = chatml(preset["system"], q)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        gen, margins = greedy(llm, ids, preset["im_end"])
        text = llm.detokenize(gen, special=False).decode("utf-8", errors="replace")
        cases.append({"prompt": prompt, "prompt_ids": ids, "generated_ids": gen, "generated_text": text,
                      "margins": margins})
        print(f"[{len(ids)} prompt tokens, {len(gen)} generated] {q[:60]!r} -> {text!r}", file=sys.stderr)
    fixture = {
        "model": os.path.basename(quant),
        "model_sha256": sha256_file(quant),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "max_new_tokens": MAX_NEW,
        "kv_cache": "f32",
        "im_end": preset["im_end"],
        "cases": cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(out)


if __name__ == "__main__":
    main()
