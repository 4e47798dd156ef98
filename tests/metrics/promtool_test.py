"""Every service's /metrics is lint-clean under Prometheus's own checker, `promtool check
metrics` (Debian's prometheus package), after real traffic: the pipeline `comps up` starts
(MiniLM, SmolLM2, the guardrail) answers a few questions, streamed and not, and ingests a
document; then chatqna, embedding, retriever, rerank, llm and guardrail are each checked,
chatqna's per-node latency series are there for every node, and the llm's time to first token,
inter-token latency, tokens and scheduler gauges have counted the answers.

  python3 tests/metrics/promtool_test.py --bin target/debug

Only loopback is a target. Exits non-zero on any finding."""

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from benchlib import ChatQnA, post  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target" / "debug"))
    args = ap.parse_args()
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
        services = {k: v for k, v in urls.items() if k != "processes"}
        for name, url in sorted(services.items()):
            text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read()
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
            findings = (r.stdout + r.stderr).decode().strip()
            if r.returncode != 0 or findings:
                failed += 1
                print(f"  FAIL  {name}: promtool says\n{findings}", flush=True)
            else:
                print(f"  ok    {name}: {text.count(b'# TYPE')} metric families, promtool clean", flush=True)
            if name == "llm":
                body = text.decode()
                for family in ("llm_time_to_first_token_seconds_count", "llm_inter_token_latency_seconds_count",
                               "llm_generation_tokens_total", "llm_requests_running", "llm_requests_waiting"):
                    line = next((l for l in body.splitlines() if l.startswith(family)), None)
                    if line is None or (family.endswith(("_count", "_total")) and float(line.split()[-1]) <= 0):
                        failed += 1
                        print(f"  FAIL  llm: {family} missing or zero after three answers: {line}", flush=True)
            if name == "chatqna":
                body = text.decode()
                for node in ("embedding", "retriever", "rerank", "llm"):
                    if f'megaservice_node_latency_seconds_count{{node="{node}' not in body:
                        failed += 1
                        print(f"  FAIL  chatqna has no latency series for node {node}", flush=True)
    print(f"metrics tests: {len(services)} services checked, {failed} finding(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
