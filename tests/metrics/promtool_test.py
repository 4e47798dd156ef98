"""Every service's /metrics is lint-clean under Prometheus's own checker, `promtool check
metrics` (Debian's prometheus package), after real traffic: the pipeline `comps up` starts
(MiniLM, SmolLM2, the guardrail) answers a few questions, streamed and not, and ingests a
document; then chatqna, embedding, retriever, rerank, llm and guardrail are each checked,
chatqna's per-node latency series are there for every node, the llm's time to first token,
inter-token latency, tokens, scheduler and KV cache gauges, the embedder's and rerank's batcher
metrics and the retriever's search latency and store size have counted the traffic.

  python3 tests/metrics/promtool_test.py --bin target/debug [--save-metrics DIR]

--save-metrics DIR writes each service's /metrics text to DIR/<service>.txt (for
tests/observability/dashboard_test.py), after one more question that the llm refuses, so that
chatqna's node error counter has a series too (a labelled counter has none before its first
count).

Only loopback is a target. Exits non-zero on any finding."""

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from benchlib import ChatQnA, post  # noqa: E402


# Per service: (metric line prefix, must it be above zero after the traffic).
MUST_HAVE = {
    "llm": [("llm_time_to_first_token_seconds_count", True), ("llm_inter_token_latency_seconds_count", True),
            ("llm_generation_tokens_total", True), ("llm_requests_running", False), ("llm_requests_waiting", False),
            ("llm_kv_cache_tokens", False), ("llm_kv_cache_capacity_tokens", True),
            ("llm_prefix_cache_hit_tokens_total", False), ("llm_prefix_cache_bytes", False)],
    "embedding": [('comps_batch_queue_wait_seconds_count{batcher="embedding"}', True),
                  ('comps_batch_size_count{batcher="embedding"}', True),
                  ('comps_batch_forward_seconds_count{batcher="embedding"}', True),
                  ('comps_batch_queue_depth{batcher="embedding"}', False)],
    "rerank": [("comps_batch_queue_wait_seconds_count{batcher=", True), ("comps_batch_size_count{batcher=", True)],
    "retriever": [("retriever_search_duration_seconds_count", True), ("retriever_store_files", True),
                  ("retriever_store_chunks", True)],
    "guardrail": [("comps_batch_queue_depth{batcher=", False)],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "debug"))
    ap.add_argument("--save-metrics", metavar="DIR", help="write each service's /metrics text to DIR/<service>.txt")
    args = ap.parse_args()
    if args.save_metrics:
        os.makedirs(args.save_metrics, exist_ok=True)
    models = Path(os.environ.get("MODELS_DIR", ROOT / "models"))
    up = ["--embedding-model", models / "all-MiniLM-L6-v2", "--llm-model", models / "SmolLM2-135M-Instruct"]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="comps-metrics-") as work, \
            ChatQnA(work, up, timeout=600, bin_dir=args.bin) as urls:
        mega = urls["chatqna"]
        for stream in (False, True):
            post(f"{mega}/v1/chatqna", {"messages": "What colour is the Zephyrine lighthouse?", "stream": stream,
                                         "max_tokens": 8})
        post(f"{mega}/v1/chat/completions", {"messages": "Where is Korvath harbour?", "max_tokens": 8})
        if args.save_metrics:
            # max_tokens past the llm's context window: the llm answers 400, chatqna counts an
            # error of node llm.
            try:
                post(f"{mega}/v1/chatqna", {"messages": "Where is Korvath harbour?", "stream": False,
                                             "max_tokens": 10_000_000})
                print("  FAIL  chatqna answered a question the llm should refuse (max_tokens 10000000)", flush=True)
                failed += 1
            except urllib.error.HTTPError as e:
                print(f"  ok    a question the llm refuses: chatqna answered {e.code}", flush=True)
        services = {k: v for k, v in urls.items() if k != "processes"}
        for name, url in sorted(services.items()):
            text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read()
            if args.save_metrics:
                Path(args.save_metrics, f"{name}.txt").write_bytes(text)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
            findings = (r.stdout + r.stderr).decode().strip()
            if r.returncode != 0 or findings:
                failed += 1
                print(f"  FAIL  {name}: promtool says\n{findings}", flush=True)
            else:
                print(f"  ok    {name}: {text.count(b'# TYPE')} metric families, promtool clean", flush=True)
            body = text.decode()
            # Families each service must have, and whether they must have counted (> 0).
            for family, counted in MUST_HAVE.get(name, ()):
                line = next((l for l in body.splitlines() if l.startswith(family)), None)
                if line is None or (counted and float(line.split()[-1]) <= 0):
                    failed += 1
                    print(f"  FAIL  {name}: {family} missing or zero after the traffic: {line}", flush=True)
            if name == "chatqna":
                body = text.decode()
                for node in ("embedding", "retriever", "rerank", "llm"):
                    if f'megaservice_node_latency_seconds_count{{node="{node}' not in body:
                        failed += 1
                        print(f"  FAIL  chatqna has no latency series for node {node}", flush=True)
                if args.save_metrics and 'megaservice_node_errors_total{node="llm' not in body:
                    failed += 1
                    print("  FAIL  chatqna counted no error of node llm after the refused question", flush=True)
    if args.save_metrics:
        print(f"metrics texts saved in {args.save_metrics}", flush=True)
    print(f"metrics tests: {len(services)} services checked, {failed} finding(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
