"""The real pipeline on the Swarm stack (called by scripts/compose.sh swarm-bench once the stack
is deployed): throughput with one and with two llm replicas, and the orchestrator's own time per
request at c=64, from chatqna's metrics.

Usage: python3 scripts/bench/swarm.py STACK http://127.0.0.1:PORT [--secs 40] [--out FILE]

For each setting the llm service is scaled (`docker service scale`), one warm-up request is
sent, then CONCURRENCY clients ask the same question (non-streamed, max_tokens 32, temperature
0) for --secs seconds. The orchestrator's time is chatqna's request latency minus the time its
node calls took (`megaservice_request_latency` and `megaservice_node_latency_seconds`, summed
over both chatqna replicas, read from each replica's /metrics before and after the run): what
chatqna itself added per request, with HAProxy in front. Only this host's own containers and
loopback are targets; every run stops by itself."""

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

QUESTION = {"messages": "What colour did Odalys Brenner paint the Zephyrine lighthouse?", "max_tokens": 32,
            "temperature": 0, "stream": False}


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check).stdout.strip()


def post(base, body, timeout=300):
    req = urllib.request.Request(base + "/v1/chatqna", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def containers(stack, service):
    return sh("docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={stack}_{service}").split()


def chatqna_sums(stack):
    """(request latency sum, count, node latency sum) over chatqna's replicas."""
    req = cnt = nodes = 0.0
    for c in containers(stack, "chatqna"):
        text = sh("docker", "exec", c, "curl", "-fsS", "localhost:8888/metrics")
        val = lambda pat: sum(float(v) for v in re.findall(pat, text, re.M))  # noqa: E731
        req += val(r"^megaservice_request_latency_sum (\S+)$")
        cnt += val(r"^megaservice_request_latency_count (\S+)$")
        nodes += val(r"^megaservice_node_latency_seconds_sum\{[^}]*\} (\S+)$")
    return req, cnt, nodes


def load(base, concurrency, secs):
    results = []
    lock = threading.Lock()
    end = time.time() + secs

    def client():
        while time.time() < end:
            t0 = time.time()
            status = post(base, QUESTION)
            with lock:
                results.append((time.time() - t0, status))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=secs + 300)
    took = time.time() - t0
    ok = sorted(lat for lat, s in results if s == 200)
    return {"requests": len(results), "ok": len(ok), "failed": len(results) - len(ok), "secs": round(took, 1),
            "req_per_s": round(len(ok) / took, 3),
            "p50_s": round(statistics.median(ok), 3) if ok else None,
            "p95_s": round(ok[int(0.95 * (len(ok) - 1))], 3) if ok else None}


def scale(stack, replicas):
    sh("docker", "service", "scale", "--detach=false", f"{stack}_llm={replicas}")
    t = time.time()
    while len(containers(stack, "llm")) != replicas:
        if time.time() - t > 300:
            sys.exit(f"llm did not reach {replicas} replicas")
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stack")
    ap.add_argument("base")
    ap.add_argument("--secs", type=int, default=40)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    for replicas, concurrency in ((1, 8), (2, 8), (2, 64)):
        scale(a.stack, replicas)
        deadline = time.time() + 300
        while post(a.base, QUESTION) != 200:
            if time.time() > deadline:
                sys.exit("the stack does not answer")
            time.sleep(2)
        before = chatqna_sums(a.stack)
        r = load(a.base, concurrency, a.secs)
        after = chatqna_sums(a.stack)
        n = after[1] - before[1]
        own = ((after[0] - before[0]) - (after[2] - before[2])) / n if n else None
        r.update(llm_replicas=replicas, concurrency=concurrency,
                 chatqna_own_ms=round(own * 1000, 2) if own is not None else None)
        rows.append(r)
        print(json.dumps(r), flush=True)
    one, two = rows[0]["req_per_s"], rows[1]["req_per_s"]
    print(f"throughput at c=8: 1 llm replica {one} req/s, 2 replicas {two} req/s ({two / one:.2f}x)" if one else "")
    print(f"chatqna's own time per request at c=64 (its latency minus its node calls): {rows[2]['chatqna_own_ms']} ms; "
          f"{rows[2]['req_per_s']} req/s, p50 {rows[2]['p50_s']} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


main()
