"""ChatQnA benchmarks.

1. Orchestration overhead: the chatqna megaservice against mock backends in their native formats
   (TEI /embed and /rerank, OPEA /v1/retrieval, OpenAI /v1/chat/completions, 32 streamed tokens),
   beside comps-flow on the same 4-hop chain, with wrk at c=1 and c=32.
2. The real pipeline as scripts/chatqna.sh runs it (multilingual-e5-small embedding and
   bi-encoder rerank, embedded store with token chunks, the 3 best chunks, Qwen2.5-Coder-0.5B-
   Instruct): end-to-end time to first token and decode tokens/s of /v1/chatqna streams at c=1
   and c=4 after ingesting samples/, the same question every time and then distinct questions
   (see QUESTIONS), with the LLM on the native backend (continuous batching)
   and on candle's (one sequence at a time) in the same run. `--llm-before PATH` adds a run of
   the native backend with another comps-llm binary (an earlier build), for a before/after
   figure from the same run; `--native-only` skips the candle runs. COMPS_BIN_DIR=DIR takes every
   binary from DIR (another build's target/release).

Load goes to 127.0.0.1 only; every run is bounded."""

import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import json

from benchlib import HEADER, RELEASE, ROOT, ChatQnA, Procs, free_port, post, row, wrk

SECONDS = next((int(a) for a in sys.argv[1:] if a.isdigit()), 5)
QUESTION = "What colour did Odalys Brenner paint the Zephyrine lighthouse, and when was it built?"
# One per request of the pipeline's "distinct questions" rows (3 at c=1, 8 at c=4), none asked twice
# in a run: with the same question every time, the LLM's prefix cache holds all of a repeated
# prompt, the best case; distinct questions share only what their prompts share.
QUESTIONS = [
    "When does the ferry to Korvath Island leave Velmouth?",
    "How long does the crossing to Korvath Island take?",
    "Who can cancel the evening ferry crossing?",
    "Where are ferry cancellations posted?",
    "What stone was the Zephyrine lighthouse built from?",
    "When was the lamp of the Zephyrine lighthouse automated?",
    "How far away can the lighthouse lamp be seen?",
    "Where do visiting boats moor at Korvath?",
    "How much does a night's mooring cost for a 12-metre boat?",
    "What does electricity cost at the moorings?",
    "Which port does the comps-rs reranker listen on?",
    "Which port does the ChatQnA megaservice listen on?",
]


def overhead():
    print("== orchestration overhead on mock backends ==")
    with Procs() as procs:
        mock, mega, flow_port = free_port(), free_port(), free_port()
        procs.start([f"{RELEASE}/mock-backends", "--port", str(mock), "--tokens", "32"], mock, env={"RUST_LOG": "warn"})
        m = f"http://127.0.0.1:{mock}"
        procs.start([f"{RELEASE}/chatqna", "--host", "127.0.0.1", "--port", str(mega)], mega, env={
            "RUST_LOG": "warn", "EMBEDDING_SERVER_PORT": str(mock), "RETRIEVER_SERVICE_PORT": str(mock),
            "RERANK_SERVER_PORT": str(mock), "LLM_SERVER_PORT": str(mock)})
        flow = (
            "opea_micro_services:\n"
            f"  embedding: {{endpoint: {m}/v1/embeddings, service_type: EMBEDDING}}\n"
            f"  retriever: {{endpoint: {m}/v1/retrieval, service_type: RETRIEVER}}\n"
            f"  rerank: {{endpoint: {m}/v1/reranking, service_type: RERANK}}\n"
            f"  llm: {{endpoint: {m}/v1/chat/completions, service_type: LLM}}\n"
            "opea_mega_service:\n  mega_flow:\n    - embedding >> retriever >> rerank >> llm\n"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(flow)
        procs.start([f"{RELEASE}/comps-flow", "--config", f.name, "--host", "127.0.0.1", "--port", str(flow_port)],
                    flow_port, env={"RUST_LOG": "warn"})
        url = f"http://127.0.0.1:{mega}/v1/chatqna"
        check = post(url, {"messages": QUESTION, "stream": False})
        assert check["object"] == "chat.completion", check
        print(HEADER)
        for stream in (False, True):
            for c in (1, 32):
                kind = "streamed" if stream else "non-streamed"
                r = wrk(url, {"messages": QUESTION, "stream": stream}, c, SECONDS, threads=1 if c == 1 else 2)
                print(row(f"chatqna (mocks) {kind} c={c}", r), flush=True)
                body = {"text": QUESTION, "stream": stream}
                r = wrk(f"http://127.0.0.1:{flow_port}/v1/flow", body, c, SECONDS, threads=1 if c == 1 else 2)
                print(row(f"comps-flow 4-hop (mocks) {kind} c={c}", r), flush=True)
        os.unlink(f.name)


def stream_once(url, max_tokens, question=QUESTION):
    """One streamed /v1/chatqna request: (seconds to the first token, tokens, seconds from the
    first to the last token)."""
    body = json.dumps({"messages": question, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            if line.startswith(b"data: b"):
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1
    return first - t0, tokens, last - first


def pipeline(backend, llm=None, label=None):
    llm = llm or f"{RELEASE}/comps-llm"
    label = label or backend
    print(f"\n== the real pipeline: e5-small + embedded store + rerank + Qwen2.5-Coder-0.5B (Q4_K_M, {label}: {llm}) ==")
    up = ["--no-guardrail", "--llm-bin", llm, "--llm-arg=--backend", f"--llm-arg={backend}"]
    # comps up ingests samples/ as scripts/chatqna.sh does.
    with tempfile.TemporaryDirectory() as data, ChatQnA(data, up) as urls:
        base = urls["chatqna"]
        url = f"{base}/v1/chatqna"
        stream_once(url, 8)  # warm-up
        print(f"{'run':<28} {'TTFT p50 ms':>12} {'TTFT max ms':>12} {'decode tok/s/stream':>20} {'total tok/s':>12}")
        distinct = iter(QUESTIONS)
        for questions, c, rounds in (("same", 1, 3), ("same", 4, 2), ("distinct", 1, 3), ("distinct", 4, 2)):
            asked = [next(distinct) if questions == "distinct" else QUESTION for _ in range(c * rounds)]
            results = []
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(c) as pool:
                for r in range(rounds):
                    results += list(pool.map(lambda q: stream_once(url, 64, q), asked[r * c:(r + 1) * c]))
            wall = time.perf_counter() - t0
            ttft = [r[0] * 1000 for r in results]
            per_stream = [(r[1] - 1) / r[2] for r in results if r[1] > 1 and r[2] > 0]
            total = sum(r[1] for r in results) / wall
            name = f"{label} {questions} q. c={c}"
            print(f"{name:<28} {statistics.median(ttft):>12.0f} {max(ttft):>12.0f} "
                  f"{statistics.median(per_stream):>20.1f} {total:>12.1f}", flush=True)


if __name__ == "__main__":
    if "--pipeline-only" not in sys.argv:
        overhead()
    if "--llm-before" in sys.argv:
        pipeline("auto", sys.argv[sys.argv.index("--llm-before") + 1], "before")
    for backend in ("auto",) if "--native-only" in sys.argv else ("auto", "candle"):
        pipeline(backend)
