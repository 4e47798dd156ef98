"""Requantize SmolLM2-135M-Instruct from the packaged Q4_1 GGUF to Q8_0 and Q4_0 with llama.cpp,
for benchmarking and fidelity fixtures. Run with the venv from scripts/bench/llama-cpp-env.sh:

    .venv-llamacpp/bin/python scripts/bench/llamacpp_requantize.py [--force]

Writes models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.{Q8_0,Q4_0}.gguf next to the Q4_1
file; a file that already exists is left alone (unless --force). Prints the output paths.

Every 2-D weight tensor is quantized to the target type: `pure=True` disables llama.cpp's
per-tensor type mixing (which would keep e.g. some ffn_down or attn_v at a higher type), and
token_embedding_type/output_tensor_type are set to the target too (by default llama.cpp keeps
token_embd at Q8_0/Q6_K). SmolLM2 ties its embeddings, so token_embd (Q8_0 in the packaged file)
is also the output projection. 1-D tensors (the RMS norm weights) stay F32, as llama.cpp always
does. This matches the Rust side, which requantizes every matrix.
"""

import argparse
import collections
import ctypes
import os
import struct
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_DIR = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct")
SOURCE = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")
# The requantized files go beside the packaged model's directory, not into it: a directory
# holding one GGUF is what `comps-llm --model DIR` (and so the compose file and chatqna.sh) loads.
OUT_DIR = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct-requantized")
TARGETS = ["Q8_0", "Q4_0"]


def require_model(path):
    if not os.path.isfile(path):
        sys.exit(f"error: {path} is missing; run `bash scripts/fetch-models.sh SmolLM2-135M-Instruct` first")


def gguf_tensor_types(path):
    """Counts of ggml type ids over the tensors of a GGUF file (header parse only)."""
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def skip_string():
            f.seek(rd("Q"), 1)

        # fixed-size GGUF value types -> byte size; 8 = string, 9 = array
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def skip_value(t):
            if t == 8:
                skip_string()
            elif t == 9:
                et, n = rd("I"), rd("Q")
                if et in sizes:
                    f.seek(sizes[et] * n, 1)
                else:
                    for _ in range(n):
                        skip_value(et)
            else:
                f.seek(sizes[t], 1)

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        rd("I")  # version
        n_tensors, n_kv = rd("Q"), rd("Q")
        for _ in range(n_kv):
            skip_string()
            skip_value(rd("I"))
        types = collections.Counter()
        for _ in range(n_tensors):
            skip_string()
            f.seek(8 * rd("I"), 1)  # dims
            types[rd("I")] += 1
            rd("Q")  # offset
        return types


def type_names(llama_cpp):
    return {getattr(llama_cpp, n): n[len("GGML_TYPE_"):] for n in dir(llama_cpp) if n.startswith("GGML_TYPE_")}


def quantize(llama_cpp, src, dst, qtype):
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 2
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.allow_requantize = True  # the source is already quantized (Q4_1)
    params.pure = True
    params.quantize_output_tensor = True
    params.token_embedding_type = getattr(llama_cpp, f"GGML_TYPE_{qtype}")
    params.output_tensor_type = getattr(llama_cpp, f"GGML_TYPE_{qtype}")
    tmp = dst + ".partial"
    # llama.cpp logs every tensor on the C stderr: send it to a file, show it only on failure.
    with tempfile.TemporaryFile(mode="w+") as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if rc != 0:
            log.seek(0)
            sys.stderr.write(log.read())
            if os.path.exists(tmp):
                os.remove(tmp)
            sys.exit(f"error: llama_model_quantize({qtype}) returned {rc}")
    os.replace(tmp, dst)  # only a complete file gets the final name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="requantize even if the output exists")
    args = ap.parse_args()
    require_model(SOURCE)
    import llama_cpp

    llama_cpp.llama_backend_init()
    names = type_names(llama_cpp)
    for q in TARGETS:
        os.makedirs(OUT_DIR, exist_ok=True)
        dst = os.path.join(OUT_DIR, f"SmolLM2-135M-Instruct.{q}.gguf")
        if os.path.exists(dst) and not args.force:
            print(f"{q}: {dst} exists, skipping", file=sys.stderr)
        else:
            print(f"{q}: quantizing {os.path.basename(SOURCE)} -> {os.path.basename(dst)}", file=sys.stderr)
            quantize(llama_cpp, SOURCE, dst, q)
        types = ", ".join(f"{names.get(t, t)}: {n}" for t, n in sorted(gguf_tensor_types(dst).items()))
        print(f"{q}: tensor types {types}", file=sys.stderr)
        print(dst)


if __name__ == "__main__":
    main()
