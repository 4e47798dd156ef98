"""Embedding throughput: the candle encoder offline (sequences/s at 16 and 128 tokens, batch
1, 8, 32), PyTorch sentence-transformers on the same weights and threads in the same run (when
the .venv from scripts/dev/python-env.sh exists), and the service under 64 concurrent
single-text clients (wrk, 128-token texts) against the offline batched figure."""

import json
import os
import re
import subprocess
import sys

from benchlib import HEADER, RELEASE, ROOT, Procs, free_port, post, row, wrk

MODEL = os.environ.get("EMBEDDING_MODEL", os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
THREADS = os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))


def json_line(out):
    m = re.search(r"^JSON (\{.*\})$", out, re.M)
    return json.loads(m.group(1)) if m else None


def main():
    env = {**os.environ, "RAYON_NUM_THREADS": THREADS}
    print(f"== candle offline (threads {THREADS})")
    out = subprocess.run([f"{RELEASE}/examples/bench_offline", MODEL, str(SECONDS)], env=env, capture_output=True,
                         text=True, check=True).stdout
    print(out.strip())
    ours = json_line(out)

    torch = None
    venv_py = os.path.join(ROOT, ".venv", "bin", "python")
    if os.path.exists(venv_py):
        print(f"\n== PyTorch sentence-transformers (threads {THREADS})")
        r = subprocess.run([venv_py, os.path.join(ROOT, "scripts", "bench", "embedding_torch.py"), "--model", MODEL,
                            "--threads", THREADS, "--seconds", str(SECONDS)], env=env, capture_output=True, text=True)
        print(r.stdout.strip() or r.stderr.strip())
        torch = json_line(r.stdout)
    else:
        print("\n(PyTorch not installed: run scripts/dev/python-env.sh to compare in the same run)")

    print("\n== service, 64 concurrent clients, one 128-token text each")
    with Procs() as procs:
        port = free_port()
        procs.start([f"{RELEASE}/comps-embedding", "--model", MODEL, "--host", "127.0.0.1", "--port", str(port)], port,
                    env={"RUST_LOG": "warn", "RAYON_NUM_THREADS": THREADS})
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        words = "the quick brown fox jumps over the lazy dog near a river".split()
        text = " ".join(words[i % len(words)] for i in range(126))
        got = post(url, {"input": text})["usage"]["prompt_tokens"]
        assert got == 128, f"service text is {got} tokens"
        print(HEADER)
        svc = wrk(url, {"input": text}, 64, max(SECONDS * 3, 8))
        print(row("comps-embedding c=64 (128 tokens)", svc))

    print("\n== summary")
    if torch:
        for k in sorted(ours, key=lambda k: (int(k.split("x")[0]), int(k.split("x")[1]))):
            print(f"{k:>7} tokens x batch: candle {ours[k]:8.1f} seq/s, PyTorch {torch.get(k, 0):8.1f} seq/s, "
                  f"ratio {ours[k] / torch[k]:.2f}x")
        print(f"target: >= 1.0x PyTorch at 128 tokens batched (128x32): {ours['128x32'] / torch['128x32']:.2f}x")
    ratio = svc["rps"] / ours["128x32"]
    print(f"service with 64 single-text clients: {svc['rps']:.1f} seq/s = {ratio:.0%} of offline batched 128x32 "
          f"({ours['128x32']:.1f} seq/s); target >= 80%")


if __name__ == "__main__":
    main()
