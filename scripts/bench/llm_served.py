"""Served LLM benchmark: comps-llm (native backend, continuous batching) beside llama-server
(built by scripts/bench/llama-server-build.sh from the same llama.cpp the kernel benchmark uses) on the
same GGUF file, one after the other in one run, at c=1, 4 and 16 streamed clients.

Every request is the same chat prompt behind its own first line, so that no server answers a whole
prompt from a cache of an earlier request's: what both may reuse is the chat template's start and
system prompt, which every chat request shares (llama-server's per-slot prompt cache, comps-llm's
prefix cache). Greedy, `ignore_eos` with `max_tokens` tokens, so both
servers generate exactly the same number of tokens; `usage` (stream_options.include_usage)
gives the count. Printed per server and concurrency: time to first token (p50, max), decode
tokens/s per stream (p50) and total generated tokens/s over the wall time.

Usage: llm_served.py --llama-server PATH --model-dir DIR --gguf FILE [--threads N] [--max-tokens N]
Load goes to 127.0.0.1 only; each run is bounded (a fixed number of requests, 300 s timeout)."""

import argparse
import concurrent.futures
import itertools
import json
import os
import statistics
import time
import urllib.request

from benchlib import RELEASE, Procs, free_port

PROMPT = ("Explain in detail how a lighthouse keeper in the nineteenth century kept the lamp burning "
          "through a winter storm: the fuel, the wick, the lens, the clockwork that turned it, and the "
          "daily log the keeper had to write. Answer in several paragraphs.")
CONCURRENCY = (1, 4, 16)


def wait_ready(url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout} s")


SERIAL = itertools.count()


def stream_once(url, model, max_tokens):
    """One streamed chat completion: (seconds to the first content, generated tokens, seconds
    from the first to the last content event)."""
    content = f"Request {next(SERIAL)}.\n{PROMPT}"
    body = json.dumps({
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    }).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
    if first is None or tokens != max_tokens:
        raise SystemExit(f"{url}: expected {max_tokens} tokens, got {tokens} (first content: {first})")
    return first - t0, tokens, last - first


def measure(name, url, model, max_tokens):
    stream_once(url, model, 8)  # warm-up
    for c in CONCURRENCY:
        rounds = 4 if c < 16 else 1
        results = []
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(c) as pool:
            for _ in range(rounds):
                results += list(pool.map(lambda _: stream_once(url, model, max_tokens), range(c)))
        wall = time.perf_counter() - t0
        ttft = [r[0] * 1000 for r in results]
        per_stream = [(r[1] - 1) / r[2] for r in results if r[2] > 0]
        total = sum(r[1] for r in results) / wall
        print(f"served {name:<12} c={c:<3} TTFT p50 {statistics.median(ttft):7.0f} ms  max {max(ttft):7.0f} ms  "
              f"decode/stream {statistics.median(per_stream):6.1f} tok/s  total {total:6.1f} tok/s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    slots = max(CONCURRENCY)
    print(f"== served, {a.threads} thread(s): {a.max_tokens} tokens per request (ignore_eos), "
          f"{slots} sequences at once on both servers")
    env = {"RUST_LOG": "warn", "RAYON_NUM_THREADS": str(a.threads)}
    with Procs() as procs:
        port = free_port()
        procs.start([f"{RELEASE}/comps-llm", "--host", "127.0.0.1", "--port", str(port), "--model", a.model_dir,
                     "--max-active-sequences", str(slots)], port, env)
        wait_ready(f"http://127.0.0.1:{port}/v1/health_check")
        measure("comps-llm", f"http://127.0.0.1:{port}/v1/chat/completions", "", a.max_tokens)
    with Procs() as procs:
        port = free_port()
        # The same context per slot as a 128-token prompt plus the answer needs, in one unified cache.
        procs.start([a.llama_server, "--host", "127.0.0.1", "--port", str(port), "-m", a.gguf, "-t", str(a.threads),
                     "-tb", str(a.threads), "-np", str(slots), "-c", str(slots * 1024), "-fa", "auto", "--no-webui"],
                    port, {"LLAMA_LOG_VERBOSITY": "0"})
        wait_ready(f"http://127.0.0.1:{port}/health")
        measure("llama-server", f"http://127.0.0.1:{port}/v1/chat/completions", "qwen", a.max_tokens)


if __name__ == "__main__":
    main()
