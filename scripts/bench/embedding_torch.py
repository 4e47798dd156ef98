#!/usr/bin/env python3
"""Baseline for the embedding service: sentences/second of SentenceTransformer.encode on CPU.

    .venv/bin/python scripts/bench/embedding_torch.py [--model DIR] [--threads N] [--seconds S]

For each sequence length (16 and 128 tokens, [CLS] and [SEP] included) and batch size (1, 8,
32) it builds a batch of distinct texts that tokenize to exactly that many tokens, warms up,
then calls encode(batch, batch_size=B, normalize_embeddings=True) repeatedly for about S
seconds and reports sentences/second. Prints a table, then one line `JSON {...}` with the
numbers keyed "<seq>x<batch>".
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(os.environ.get("MODELS_DIR", os.path.join(ROOT, "models")), "all-MiniLM-L6-v2")

SEQ_LENS = (16, 128)
BATCHES = (1, 8, 32)

# Plain English words; the ones that are not a single WordPiece token are dropped below.
WORDS = (
    "the of and to in is was for on as with by he at from his an were are which this be or "
    "has had not but first one their its new after who they have her she two been other when "
    "there all during into school time may years more most only over city some world would where "
    "later up such used many can state about national out known university united then made "
    "team american under year both them film government series including between age century "
    "well through since early family group area number against season like county river music "
    "house life war south north west east member back public home high part during london "
    "water old album work line game best three following final church people each power club "
    "road own second began named small found field before even history british great major "
    "local day because within held played long however based several general include did army"
).split()


def make_texts(tokenizer, n_tokens, count):
    """`count` distinct texts, each exactly n_tokens long with [CLS]/[SEP]."""
    vocab = [w for w in dict.fromkeys(WORDS)
             if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    body = n_tokens - 2
    texts = []
    for i in range(count):
        # Different stride per text, so the texts differ but stay deterministic.
        words = [vocab[(i * 7 + j * (i % 5 + 1)) % len(vocab)] for j in range(body)]
        text = " ".join(words)
        got = len(tokenizer(text, add_special_tokens=True)["input_ids"])
        if got != n_tokens:
            sys.exit(f"internal error: built a text of {got} tokens, wanted {n_tokens}: {text!r}")
        texts.append(text)
    return texts


def cpu_snapshot():
    """(machine busy seconds, this process's CPU seconds, wall time); busy is None off Linux."""
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait
        busy = (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return busy, t.user + t.system, time.monotonic()


def other_cpu_use(start):
    """Average number of cores that other processes kept busy since `start`."""
    end = cpu_snapshot()
    if start[0] is None or end[0] is None:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model dir (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured time per cell (default: %(default)s)")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.model, "modules.json")):
        sys.exit(f"{args.model} is not a sentence-transformers model directory; run scripts/fetch-models.sh first")

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu", local_files_only=True)
    model.eval()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
          f"sentence-transformers {sentence_transformers.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cpus", flush=True)
    print(f"model {args.model}, max_seq_length {model.max_seq_length}, {args.seconds:g} s per cell", flush=True)
    snap = cpu_snapshot()

    results = {}
    rows = []
    with torch.inference_mode():
        for seq in SEQ_LENS:
            texts = make_texts(model.tokenizer, seq, max(BATCHES))
            for bs in BATCHES:
                batch = texts[:bs]

                def run(batch=batch, bs=bs):
                    model.encode(batch, batch_size=bs, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

                # Warm up: at least 3 calls and 0.5 s.
                t0 = time.perf_counter()
                n = 0
                while n < 3 or time.perf_counter() - t0 < 0.5:
                    run()
                    n += 1
                calls = 0
                t0 = time.perf_counter()
                while True:
                    run()
                    calls += 1
                    elapsed = time.perf_counter() - t0
                    if elapsed >= args.seconds:
                        break
                sps = calls * bs / elapsed
                ms = elapsed / calls * 1000
                results[f"{seq}x{bs}"] = round(sps, 1)
                rows.append((seq, bs, calls, ms, sps))
                print(f"  {seq:>3} tokens x batch {bs:>2}: {sps:9.1f} seq/s  ({ms:8.2f} ms/call, {calls} calls)",
                      file=sys.stderr, flush=True)

    others = other_cpu_use(snap)
    if others is not None:
        print(f"\nother processes used {others:.2f} cores on average while this ran")
        if others > 0.2:
            print("WARNING: the machine was busy with other work; these numbers are not a clean baseline", flush=True)
    print()
    print(f"{'seq_len':>7} {'batch':>5} {'calls':>6} {'ms/call':>9} {'seq/s':>9}")
    for seq, bs, calls, ms, sps in rows:
        print(f"{seq:>7} {bs:>5} {calls:>6} {ms:>9.2f} {sps:>9.1f}")
    meta = {
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "threads": torch.get_num_threads(),
        "other_cores_busy": None if others is None else round(others, 2),
        "unit": "seq_per_s",
    }
    print("JSON " + json.dumps({**meta, **results}, separators=(",", ":")))


if __name__ == "__main__":
    main()
