"""Prometheus of the compose pipeline's `observability` profile, checked through its HTTP API
(called by scripts/compose.sh test, after compose_check.py).

Usage: [COMPOSE_CMD="docker-compose -p NAME"] python3 scripts/docker/prometheus_check.py \\
           http://127.0.0.1:PROMETHEUS_PORT http://127.0.0.1:CHATQNA_PORT

Expects every service of deploy/observability/prometheus.yml scraped and up, chatqna's per-node
latency series for embedding, retriever, rerank and llm, and the recording rules to have produced
values: the llm node's p95 latency and chatqna's request rate, after one more question sent here
(rates look back a minute, and compose_check.py may have finished a while ago)."""

import json
import math
import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from checklib import poll

PROM, CHATQNA = sys.argv[1], sys.argv[2]
COMPOSE = shlex.split(os.environ.get("COMPOSE_CMD", ""))
SERVICES = ("chatqna", "embedding", "retriever", "rerank", "llm", "guardrail")
# Node labels are the node's name and its kind: `llm/MicroService`.
NODES = ("embedding", "retriever", "rerank", "llm")
# Scrapes and rule evaluations are every 5 s: a minute is twelve of them.
DEADLINE_S = 60


def api(path, **params):
    url = f"{PROM}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def query(expr):
    """The instant vector of `expr` as {frozenset of labels: value}."""
    return {frozenset(s["metric"].items()): float(s["value"][1]) for s in api("query", query=expr)["result"]}


def fail(what):
    if COMPOSE:
        subprocess.run(COMPOSE + ["logs", "--tail", "30", "prometheus"])
    sys.exit(f"prometheus check FAILED: {what}")


def wait(what, probe):
    poll(what, probe, DEADLINE_S, fail)


def ready():
    with urllib.request.urlopen(f"{PROM}/-/ready", timeout=5) as r:
        return r.status == 200, "ready"


def targets_up():
    active = api("targets", state="active")["activeTargets"]
    health = {t["labels"].get("job"): t["health"] for t in active}
    missing = [s for s in SERVICES if s not in health]
    down = {j: h for j, h in health.items() if h != "up"}
    if missing or down:
        errors = {t["labels"].get("job"): t.get("lastError") for t in active if t["health"] != "up"}
        return False, f"missing {missing}, not up {down} ({errors})"
    return True, f"{len(health)} targets up: {', '.join(sorted(health))}"


def node_series():
    nodes = {dict(k).get("node", "").split("/")[0] for k in query("megaservice_node_latency_seconds_count")}
    missing = [n for n in NODES if n not in nodes]
    return not missing, f"nodes {sorted(n for n in nodes if n)}" + (f", missing {missing}" if missing else "")


def recorded():
    p95 = query('chatqna:node_latency_seconds:p95{node=~"llm(/.*)?"}')
    rps = query('job:comps_http_requests:rate1m{job="chatqna"}')
    values = list(p95.values()) + list(rps.values())
    ok = len(p95) == 1 and len(rps) == 1 and all(math.isfinite(v) and v > 0 for v in values)
    return ok, f"chatqna:node_latency_seconds:p95{{node=llm}} = {list(p95.values())}, " \
               f"job:comps_http_requests:rate1m{{job=chatqna}} = {list(rps.values())}"


def ask():
    body = {"messages": "Where is Korvath harbour?", "max_tokens": 8, "stream": False}
    req = urllib.request.Request(f"{CHATQNA}/v1/chatqna", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    wait("Prometheus ready", ready)
    wait("every service scraped and up", targets_up)
    status = ask()
    if status != 200:
        fail(f"a question to chatqna for fresh samples answered {status}")
    wait("per-node latency series in Prometheus", node_series)
    wait("recording rules evaluated to values", recorded)


main()
