"""End-to-end check of the pipeline started by docker-compose (called by scripts/compose.sh test).

Usage: COMPOSE_CMD="docker-compose -p NAME" python3 scripts/docker/compose_check.py http://127.0.0.1:PORT

Ingests a sample document through ChatQnA's dataprep forwarder, asks about it (non-streamed and
streamed), stops the llm container and expects a fast 502 naming the llm node, starts it again
and expects answers to come back."""

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from checklib import post_json

BASE = sys.argv[1]
COMPOSE = shlex.split(os.environ["COMPOSE_CMD"])
QUESTION = {"messages": "What colour did Odalys Brenner paint the Zephyrine lighthouse?", "max_tokens": 32,
            "temperature": 0}


def post(path, body, timeout=120):
    return post_json(BASE + path, body, timeout)


def wait_healthy(deadline_s):
    t = time.time()
    while time.time() - t < deadline_s:
        try:
            with urllib.request.urlopen(BASE + "/v1/health_check", timeout=2) as r:
                if r.status == 200:
                    return time.time() - t
        except OSError:
            pass
        time.sleep(1)
    subprocess.run(COMPOSE + ["ps"])
    subprocess.run(COMPOSE + ["logs", "--tail", "30"])
    sys.exit("compose check: ChatQnA did not become healthy")


def check(cond, what):
    if not cond:
        subprocess.run(COMPOSE + ["logs", "--tail", "30"])
        sys.exit(f"compose check FAILED: {what}")
    print(f"ok: {what}", flush=True)


def main():
    took = wait_healthy(300)
    print(f"pipeline healthy after {took:.0f} s", flush=True)
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-F", "files=@samples/korvath-harbour.md",
                          "-F", "chunk_size=400", BASE + "/v1/dataprep/ingest"],
                         capture_output=True, text=True, check=True).stdout
    check(out.rstrip().endswith("200"), f"ingest through the dataprep forwarder ({out.strip()[-80:]!r})")

    status, body = post("/v1/chatqna", dict(QUESTION, stream=False))
    check(status == 200, f"non-streamed answer status {status}")
    answer = json.loads(body)
    text = answer["choices"][0]["message"]["content"]
    check(answer["model"] == "chatqna" and text.strip(), f"non-streamed answer {text!r}")

    status, body = post("/v1/chatqna", QUESTION)
    check(status == 200 and body.endswith("data: [DONE]\n\n") and "data: b" in body, "streamed answer in OPEA framing")

    subprocess.run(COMPOSE + ["stop", "llm"], check=True, capture_output=True)
    t = time.time()
    status, body = post("/v1/chatqna", dict(QUESTION, stream=False))
    took = time.time() - t
    check(status == 502 and "node llm/MicroService" in body and took < 5,
          f"llm container stopped -> {status} in {took * 1000:.0f} ms: {body[:160]}")

    subprocess.run(COMPOSE + ["start", "llm"], check=True, capture_output=True)
    t = time.time()
    while True:
        status, body = post("/v1/chatqna", dict(QUESTION, stream=False))
        if status == 200:
            break
        if time.time() - t > 120:
            check(False, f"recovery after starting llm again (last {status}: {body[:160]})")
        time.sleep(1)
    check(json.loads(body)["choices"][0]["message"]["content"] == text,
          f"llm container started again -> answers again after {time.time() - t:.1f} s, same text")


main()
