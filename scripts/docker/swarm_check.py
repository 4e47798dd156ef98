"""The Swarm stack (deploy/swarm/stack.yml) checked for real (called by scripts/compose.sh
swarm-test once the stack is deployed).

Usage: python3 scripts/docker/swarm_check.py STACK http://127.0.0.1:PORT

Waits for every service to run all its replicas, ingests a document and asks about it through
the entry point, then runs load at c=16 (bounded in time) twice:
  (a) one llm replica is killed mid-load: only requests in flight on it may fail, each with a
      502/504 naming the llm node, and Swarm starts a new task in its place;
  (b) chatqna is updated (rolling, start-first): no request may fail.
It also checks that the llm replicas shared the load, from each replica's own /metrics, and
prints the figures. Only this host's own containers and loopback are targets."""

import json
import re
import subprocess
import sys
import threading
import time
from checklib import poll, post_json

STACK, BASE = sys.argv[1], sys.argv[2]
QUESTION = {"messages": "What colour did Odalys Brenner paint the Zephyrine lighthouse?", "max_tokens": 12,
            "temperature": 0, "stream": False}
CONCURRENCY = 16
REPLICAS = {"embedding": 2, "retriever": 1, "rerank": 2, "llm": 2, "chatqna": 2, "entry": 1}


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check).stdout.strip()


def fail(what):
    for name in REPLICAS:
        print(f"--- {STACK}_{name}:", sh("docker", "service", "ps", "--no-trunc", f"{STACK}_{name}", check=False))
        print(sh("docker", "service", "logs", "--tail", "15", f"{STACK}_{name}", check=False))
    sys.exit(f"swarm check FAILED: {what}")


def check(cond, what):
    if not cond:
        fail(what)
    print(f"ok: {what}", flush=True)


def post(path, body, timeout=180):
    return post_json(BASE + path, body, timeout)


def containers(service):
    """Running containers of one service of the stack."""
    out = sh("docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}")
    return out.split()


def running():
    """Service -> running replicas, from `docker service ls`."""
    out = sh("docker", "service", "ls", "--filter", f"label=com.docker.stack.namespace={STACK}",
             "--format", "{{.Name}} {{.Replicas}}")
    got = {}
    for line in out.splitlines():
        name, replicas = line.split()[:2]
        got[name.removeprefix(f"{STACK}_")] = int(replicas.split("/")[0])
    return got


def wait_for(what, probe, deadline_s):
    poll(what, probe, deadline_s, fail, every=2)


def all_running():
    got = running()
    healthy = all(got.get(n, 0) >= want for n, want in REPLICAS.items())
    if healthy:
        status, _ = post("/v1/chatqna", QUESTION)
        healthy = status == 200
        return healthy, f"{got}, entry answered {status}"
    return False, str(got)


def llm_requests(container):
    """Generations this llm replica finished (its own /metrics) and its replica name."""
    text = sh("docker", "exec", container, "curl", "-fsS", "localhost:9009/metrics", check=False)
    total = sum(float(m) for m in re.findall(r'^llm_requests_total\{[^}]*\} (\S+)$', text, re.M))
    name = re.search(r'^comps_replica_info\{[^}]*replica="([^"]+)"', text, re.M)
    return total, name.group(1) if name else "?"


class Load:
    """CONCURRENCY clients asking QUESTION in a loop until stopped."""

    def __init__(self):
        self.results = []  # (start, end, status, body excerpt)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CONCURRENCY)]

    def client(self):
        while not self.stop.is_set():
            t0 = time.time()
            status, body = post("/v1/chatqna", QUESTION)
            with self.lock:
                self.results.append((t0, time.time(), status, body[:300]))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=240)

    def failures(self):
        return [r for r in self.results if r[2] != 200]


def main():
    wait_for("every service runs all its replicas and the entry point answers", all_running, 420)
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-F", "files=@samples/korvath-harbour.md",
                          "-F", "chunk_size=400", BASE + "/v1/dataprep/ingest"],
                         capture_output=True, text=True, check=True).stdout
    check(out.rstrip().endswith("200"), "ingest through the entry point")
    status, body = post("/v1/chatqna", QUESTION)
    check(status == 200 and json.loads(body)["choices"][0]["message"]["content"].strip(),
          f"an answer through the entry point: {body[:120]}")

    # (a) One llm replica killed under load.
    llms = containers("llm")
    check(len(llms) == 2, f"two llm replicas: {llms}")
    victim = llms[0]
    with Load() as load:
        time.sleep(10)
        killed_at = time.time()
        sh("docker", "kill", victim)
        time.sleep(15)
    in_flight = [r for r in load.results if r[0] <= killed_at <= r[1]]
    failures = load.failures()
    print(f"kill: {len(load.results)} requests, {len(failures)} failed, {len(in_flight)} were in flight at the "
          f"kill (on either replica)", flush=True)
    for f in failures[:5]:
        print(f"  failed: started {f[0] - killed_at:+.2f} s from the kill, {f[2]}: {f[3][:160]}", flush=True)
    check(all(f[2] in (502, 504) and "llm" in f[3] for f in failures),
          "every failure is a 502/504 naming the llm node")
    check(all(f[0] <= killed_at for f in failures), "only requests already in flight at the kill failed")
    check(len(failures) <= len(in_flight), f"{len(failures)} failures <= {len(in_flight)} in flight")
    wait_for("Swarm replaced the killed llm replica",
             lambda: ((len(c := containers("llm")) == 2 and victim not in c), f"llm containers {c}"), 240)
    wait_for("the pipeline answers with both llm replicas", all_running, 240)

    # (b) A rolling update of chatqna under load; and the llm replicas' shares.
    llms = containers("llm")
    before = {c: llm_requests(c)[0] for c in llms}
    with Load() as load:
        time.sleep(5)
        t = time.time()
        sh("docker", "service", "update", "--force", "--detach=false", f"{STACK}_chatqna")
        updated = time.time() - t
        time.sleep(5)
    failures = load.failures()
    print(f"rolling update of chatqna took {updated:.0f} s: {len(load.results)} requests, {len(failures)} failed",
          flush=True)
    for f in failures[:5]:
        print(f"  failed: {f[2]}: {f[3][:160]}", flush=True)
    check(not failures, "no request failed during the rolling update")
    shares = {c: (llm_requests(c)[0] - before[c], llm_requests(c)[1]) for c in llms}
    print("llm replicas' shares: " + ", ".join(f"{name}: {n:.0f}" for n, name in shares.values()), flush=True)
    check(all(n > 0 for n, _ in shares.values()), "both llm replicas answered part of the load")


main()
