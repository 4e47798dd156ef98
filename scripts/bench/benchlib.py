"""Shared helpers for the benchmark scripts: start our binaries, wait for them, run wrk and
parse what it prints. Load goes to 127.0.0.1 only, each run is bounded in time."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# COMPS_BIN_DIR runs the benchmarks with the binaries of another build (a before/after pair).
RELEASE = os.environ.get("COMPS_BIN_DIR") or os.path.join(ROOT, "target", "release")
LUA = os.path.join(ROOT, "scripts", "bench", "post.lua")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Processes started for a benchmark; all stopped on exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, port, env=None):
        log = tempfile.TemporaryFile()
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(p)
        deadline = time.time() + 30
        while time.time() < deadline:
            if p.poll() is not None:
                log.seek(0)
                sys.exit(f"{args[0]} exited early:\n{log.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return p
            except OSError:
                time.sleep(0.05)
        sys.exit(f"{args[0]} did not listen on {port}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


class ChatQnA:
    """The ChatQnA pipeline as `comps up` (tools/launcher) runs it for scripts/chatqna.sh, on
    free ports, its data and logs in `data_dir`; entering returns the services' URLs, leaving
    stops it. `up_args` are more `comps up` flags, `chatqna_args` the megaservice's, `env` goes
    to every service (RUST_LOG=warn unless it says otherwise), `bin_dir` is the build to run
    (the launcher included)."""

    def __init__(self, data_dir, up_args=(), chatqna_args=(), timeout=900, bin_dir=RELEASE, env=None):
        self.data_dir, self.timeout = str(data_dir), timeout
        self.ready = os.path.join(self.data_dir, "ready.json")
        self.env = {"RUST_LOG": "warn", **(env or {})}
        ports = [f"--{n}-port=0" for n in ("chatqna", "embedding", "retriever", "rerank", "llm", "guardrail")]
        launcher = os.path.join(bin_dir, "comps")
        if not os.path.exists(launcher):  # an older build without the launcher: this one's
            launcher = os.path.join(ROOT, "target", "release", "comps")
        self.argv = [launcher, "up", "--bin-dir", str(bin_dir), "--data-dir", self.data_dir, "--ready-file",
                     self.ready, "--no-fetch", *ports, *map(str, up_args), "--", *chatqna_args]

    def __enter__(self):
        self.log = open(os.path.join(self.data_dir, "comps-up.log"), "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **self.env})
        deadline = time.time() + self.timeout
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None or time.time() > deadline:
                self.__exit__()
                with open(os.path.join(self.data_dir, "comps-up.log"), errors="replace") as f:
                    sys.exit(f"comps up did not get ready:\n{f.read()[-4000:]}")
            time.sleep(0.2)
        with open(self.ready) as f:
            return json.load(f)

    def __exit__(self, *exc):
        self.proc.terminate()  # comps stops every service it started
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read().decode()
        return json.loads(data) if r.headers.get("content-type", "").startswith("application/json") else data


def _ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url, body, connections, seconds, threads=None):
    """Run wrk with a JSON body; returns req/s, p50/p90/p99 in ms and the error counts."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    threads = threads or min(connections, 2)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
        path = f.name
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", LUA, url],
            env={**os.environ, "BODY_FILE": path},
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(path)
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = _ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return res


def row(name, r):
    return (
        f"{name:<44} {r['rps']:>10.0f} {r['p50']:>9.3f} {r['p90']:>9.3f} {r['p99']:>9.3f} "
        f"{r['non2xx'] + r['socket_errors']:>7}"
    )


HEADER = f"{'run':<44} {'req/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'errors':>7}"
