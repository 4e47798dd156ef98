"""The standing hostile suite: the whole ChatQnA stack (the real binaries, real models) on
loopback, attacked the way a hostile client and a failing network would, bounded in requests
and time. It prints one summary line and exits non-zero when any request got a 5xx it should
not have, hung, or lost acknowledged data.

Phases:
  openapi   every service's /v1/openapi.json validated (openapi-spec-validator) and /docs served
  fuzz      schemathesis against every service's document (not_a_server_error, bounded examples)
  attacks   the files and requests that once crashed, wiped, exhausted or mis-answered a service
  faults    a downstream killed and stopped under load, 1,000 dropped streams, overload past the
            limit, kill -9 during ingest

  python3 tests/hostile/suite.py --bin target/debug [--soak] [--only fuzz,attacks]

Only loopback is ever a target. Every loop has a count and a deadline.
"""

import argparse
import concurrent.futures as cf
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "scripts" / "fixtures"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from benchlib import ChatQnA  # noqa: E402
from pdfwrite import pdf, stream  # noqa: E402


class Tally:
    """Every request the suite made or had made: status counts, unexpected 5xx, hangs, losses."""

    def __init__(self):
        self.statuses = Counter()
        self.unexpected_5xx = []
        self.hangs = []
        self.lost = []
        self.failures = []

    def saw(self, what, status, allow_5xx=False):
        self.statuses[status if status is not None else "none"] += 1
        if status is None:
            self.hangs.append(what)
        elif status >= 500 and not allow_5xx:
            self.unexpected_5xx.append(f"{what}: {status}")

    def fail(self, what):
        self.failures.append(what)
        print(f"  FAIL {what}", flush=True)

    def check(self, ok, what):
        if not ok:
            self.fail(what)
        return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None, headers=None, timeout=60.0, raw=False):
    """(status, parsed JSON or text); status None when no answer came in time."""
    data = None
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        data = json.dumps(body).encode()
        hdrs.setdefault("content-type", "application/json")
    elif body is not None:
        data = bytes(body)
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            payload = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        payload = e.read()
        status = e.code
    except (TimeoutError, socket.timeout, urllib.error.URLError, ConnectionError, http.client.HTTPException):
        return None, None
    if raw:
        return status, payload
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")


def multipart(files, fields=()):
    boundary = "----comps-hostile-" + os.urandom(8).hex()
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for fname, content in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{fname}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(content)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"content-type": f"multipart/form-data; boundary={boundary}"}


class Megaservice:
    """A second chatqna the suite starts itself (the overload test's, with its own limits), from
    the command and environment the launcher gave the stack's own."""

    def __init__(self, name, argv, logdir, env):
        self.name, self.port, self.logdir = name, free_port(), logdir
        self.argv = list(argv)
        self.argv[self.argv.index("--port") + 1] = str(self.port)
        self.env = env
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        log = open(self.logdir / f"{self.name}.log", "ab")
        env = dict(os.environ, COMPS_LOG_FORMAT="text", **self.env)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=env)
        end = time.time() + 180
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited at start; see {self.logdir / (self.name + '.log')}")
            status, _ = request("GET", f"{self.url}/v1/health_check", timeout=2)
            if status == 200:
                return self
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not become healthy in 180 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Service:
    """One process of the stack, as the launcher's ready file names it now (a restart changes
    its pid, not its address)."""

    def __init__(self, stack, name):
        self.stack, self.name = stack, name

    @property
    def info(self):
        return self.stack.processes()[self.name]

    @property
    def url(self):
        return self.info["url"]

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    @property
    def restarts(self):
        return self.info["restarts"]

    def kill(self, sig=signal.SIGKILL):
        os.kill(self.info["pid"], sig)

    def wait_back(self, restarts_before, deadline_s=180):
        """Wait until the launcher has restarted it and it answers its health check again."""
        end = time.time() + deadline_s
        while time.time() < end:
            if self.restarts > restarts_before:
                status, _ = request("GET", f"{self.url}/v1/health_check", timeout=2)
                if status == 200:
                    return
            if self.stack.up.proc.poll() is not None:
                raise SystemExit(f"comps up stopped instead of restarting {self.name}; see {self.stack.work}")
            time.sleep(0.2)
        raise SystemExit(f"the launcher did not bring {self.name} back within {deadline_s} s")


class Stack:
    """The five services and chatqna, on free loopback ports, run by the launcher (`comps up`,
    as scripts/chatqna.sh runs them) with the small models and `--restart on-failure`: a service
    the suite kills is started again by the launcher on the same port."""

    NAMES = ("embedding", "retriever", "rerank", "llm", "guardrail", "chatqna")

    def __init__(self, bin_dir, work):
        self.work = work
        self.logs = work / "logs"
        models = Path(os.environ.get("MODELS_DIR", ROOT / "models"))
        minilm, smol = str(models / "all-MiniLM-L6-v2"), str(models / "SmolLM2-135M-Instruct")
        up = ["--embedding-model", minilm, "--llm-model", smol, "--guardrail-model", minilm, "--no-ingest",
              "--restart", "on-failure", "--restart-delay-secs", "2", "--max-restarts", "10"]
        # A stopped downstream is noticed in seconds, not OPEA's minutes.
        env = {"RUST_LOG": os.environ.get("RUST_LOG") or "info", "COMPS_LOG_FORMAT": "text",
               "CHATQNA_NODE_TIMEOUT": "10"}
        self.up = ChatQnA(work, up, timeout=600, bin_dir=bin_dir, env=env)
        self.services = {n: Service(self, n) for n in self.NAMES}

    def processes(self):
        with open(self.up.ready) as f:
            return json.load(f)["processes"]

    def __getitem__(self, name):
        return self.services[name]

    def start(self):
        self.up.__enter__()
        for s in self.services.values():
            print(f"  {s.name} is up on {s.url}", flush=True)

    def stop(self):
        if getattr(self.up, "proc", None) is not None:
            self.up.__exit__()


# ---------------------------------------------------------------------------------------------
# Attack files


def one_page_pdf(content, filt="", page_extra=""):
    return pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
         f"/Resources << /Font << /F1 5 0 R >> >> {page_extra} >>").encode(),
        stream(content, filt),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])


def attack_files():
    depth = 5000
    deep_pdf = one_page_pdf(b"BT /F1 12 Tf (x) Tj ET", page_extra="/Nest " + "[" * depth + "]" * depth)
    z = zlib.compressobj(9)
    block = b" " * (1 << 20)
    bomb = b"".join(z.compress(block) for _ in range(1024)) + z.flush()  # 1 GiB of spaces in ~1 MB
    bomb_pdf = one_page_pdf(bomb, filt="/Filter /FlateDecode")
    deep_html = ("<div>" * 200_000 + "<p>deep</p>" + "</div>" * 200_000).encode()
    return {"deep.pdf": deep_pdf, "bomb.pdf": bomb_pdf, "deep.html": deep_html}


# ---------------------------------------------------------------------------------------------
# Phases


def phase_openapi(stack, tally):
    from openapi_spec_validator import validate

    print("== openapi: every service's document validated", flush=True)
    for name, svc in stack.services.items():
        status, doc = request("GET", f"{svc.url}/v1/openapi.json")
        tally.saw(f"{name} openapi", status)
        if not tally.check(status == 200 and isinstance(doc, dict), f"{name}: GET /v1/openapi.json -> {status}"):
            continue
        try:
            validate(doc)
        except Exception as e:  # the validator's own error types vary by version
            tally.fail(f"{name}: /v1/openapi.json is not a valid OpenAPI document: {str(e)[:300]}")
            continue
        (stack.work / f"openapi-{name}.json").write_text(json.dumps(doc, indent=1))
        status, page = request("GET", f"{svc.url}/docs")
        tally.saw(f"{name} docs", status)
        tally.check(status == 200 and "openapi.json" in str(page), f"{name}: GET /docs -> {status}")
        print(f"  {name}: {doc.get('openapi')} with {len(doc.get('paths', {}))} paths, valid; /docs served", flush=True)


def phase_fuzz(stack, tally, examples, budget_s, st_bin):
    print(f"== fuzz: schemathesis, {examples} examples per operation, {budget_s} s per service", flush=True)
    log = stack.work / "schemathesis.jsonl"
    env = dict(os.environ, SCHEMATHESIS_HOOKS="st_hooks", COMPS_HOSTILE_LOG=str(log), PYTHONPATH=str(HERE))
    for name, svc in stack.services.items():
        started = time.time()
        before = log.read_text().count("\n") if log.exists() else 0
        cmd = [
            st_bin, "run", f"{svc.url}/v1/openapi.json",
            "--checks", "not_a_server_error",
            "--max-examples", str(examples),
            "--request-timeout", "60",
            "--seed", "20261130",
            "--workers", "2",
            "--phases", "examples,coverage,fuzzing",
            "--max-time", str(budget_s),
            "--generation-database", "none",
            "--suppress-health-check", "all",
            "--no-color",
        ]
        out = subprocess.run(cmd, env=env, cwd=stack.work, capture_output=True, text=True, timeout=budget_s + 300)
        lines = log.read_text().splitlines()[before:] if log.exists() else []
        counts = Counter()
        for line in lines:
            e = json.loads(line)
            tally.saw(f"{name} fuzz {e['op']}", e["status"])
            counts[e["status"]] += 1
        took = time.time() - started
        print(f"  {name}: {len(lines)} requests in {took:.0f} s, statuses {dict(sorted(counts.items(), key=str))}",
              flush=True)
        if out.returncode != 0:
            tail = "\n".join((out.stdout + out.stderr).splitlines()[-40:])
            tally.fail(f"{name}: schemathesis found failures (exit {out.returncode}):\n{tail}")


def phase_attacks(stack, tally):
    print("== attacks: the files and requests that once broke a service", flush=True)
    cq, ret, emb = stack["chatqna"].url, stack["retriever"].url, stack["embedding"].url

    def expect(what, method, url, body=None, headers=None, ok=(), timeout=120):
        t0 = time.time()
        status, v = request(method, url, body, headers, timeout=timeout)
        tally.saw(what, status)
        good = status in ok
        tally.check(good, f"{what}: got {status} {str(v)[:200]}, expected one of {ok}")
        print(f"  {what}: {status} in {time.time() - t0:.1f} s", flush=True)
        return status, v

    body, hdrs = multipart([("keep.txt", b"The Harrowgate archive keeps the tide charts of 1911.")])
    expect("ingest a good file through chatqna", "POST", f"{cq}/v1/dataprep/ingest", body, hdrs, ok=(200,))
    for fname, content in attack_files().items():
        body, hdrs = multipart([(fname, content)])
        expect(f"upload {fname} ({len(content)} bytes) through chatqna", "POST", f"{cq}/v1/dataprep/ingest",
               body, hdrs, ok=(200, 400, 413, 422))
    body, hdrs = multipart([("t.txt", ("tide " * 5000).encode())], [("chunk_size", "1")])
    expect("chunk_size=1", "POST", f"{ret}/v1/dataprep/ingest", body, hdrs, ok=(422,))
    expect("delete all in index '..'", "POST", f"{cq}/v1/dataprep/delete",
           {"file_path": "all", "index_name": ".."}, ok=(422,))
    status, files = request("POST", f"{cq}/v1/dataprep/get", {})
    tally.saw("list after the attacks", status)
    names = [f.get("name") for f in files] if isinstance(files, list) else []
    if not tally.check("keep.txt" in names, f"the acknowledged file is gone after the attacks: {names}"):
        tally.lost.append("keep.txt")
    expect("url-encoded ingest", "POST", f"{ret}/v1/dataprep/ingest", b"files=a.txt",
           {"content-type": "application/x-www-form-urlencoded"}, ok=(400,))
    status, v = expect("10 MB encoding_format", "POST", f"{emb}/v1/embeddings",
                       {"input": "x", "encoding_format": "z" * (10 << 20)}, ok=(400, 422))
    tally.check(len(json.dumps(v)) < 4096, "a 10 MB bad value was echoed in the error")
    expect("10 MB input, no truncation", "POST", f"{emb}/embed",
           {"inputs": "word " * (2 << 20), "truncate": False}, ok=(413, 422))
    expect("33 inputs to /v1/embeddings", "POST", f"{emb}/v1/embeddings", {"input": ["hi"] * 33}, ok=(200,))
    for link in ("http://[::127.0.0.1]/", "http://[64:ff9b::a00:1]/", "http://[2002:a00:1::]/"):
        body, hdrs = multipart([], [("link_list", json.dumps([link]))])
        _, v = expect(f"link {link}", "POST", f"{ret}/v1/dataprep/ingest", body, hdrs, ok=(400,))
        tally.check("non-public" in json.dumps(v), f"link {link} was not refused as non-public: {v}")
    status, v = expect("guardrail on 'answer'", "POST", f"{stack['guardrail'].url}/v1/guardrails",
                       {"text": "answer"}, ok=(200,))
    tally.check(isinstance(v, dict) and "Violated" not in json.dumps(v), f"'answer' was refused: {v}")
    expect("rerank an empty query", "POST", f"{stack['rerank'].url}/rerank",
           {"query": "", "texts": ["a"]}, ok=(200, 400, 422))
    expect("chatqna answers after the attacks", "POST", f"{cq}/v1/chatqna",
           {"messages": "What does the Harrowgate archive keep?", "stream": False, "max_tokens": 8}, ok=(200,))


def load(url, body, n, workers, timeout, stream=False):
    """n requests with `workers` at once; each result is (status, first bytes)."""

    def one(_):
        status, v = request("POST", url, body, timeout=timeout, raw=True)
        return status, (v or b"")[:400]

    with cf.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, range(n)))


def phase_faults(stack, tally, dropped_streams):
    print("== faults: a dying downstream, dropped streams, overload, kill -9 during ingest", flush=True)
    cq = stack["chatqna"].url
    ask = {"messages": "What does the Harrowgate archive keep?", "stream": False, "max_tokens": 8}
    body, hdrs = multipart([("archive.txt", b"The Harrowgate archive keeps the tide charts of 1911.")])
    status, _ = request("POST", f"{cq}/v1/dataprep/ingest", body, hdrs)
    tally.saw("ingest before the faults", status)
    tally.check(status in (200, 400), f"ingest before the faults: {status}")  # 400: already there

    # A downstream killed under load: every request answers, those that needed it with a 502
    # naming the node; once the launcher has restarted it the pipeline answers again.
    llm = stack["llm"]
    restarts = llm.restarts
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(load, f"{cq}/v1/chatqna", ask, 24, 4, 120)
        time.sleep(3.0)
        llm.kill(signal.SIGKILL)
        results = fut.result()
    named = 0
    for status, body in results:
        tally.saw("chatqna while llm is killed", status, allow_5xx=status in (502, 504))
        if status in (502, 504):
            named += b"llm" in body
            tally.check(b"llm" in body, f"a {status} that does not name the llm node: {body[:200]!r}")
    print(f"  llm killed under load: {Counter(s for s, _ in results)} ({named} errors naming the node)", flush=True)
    t0 = time.time()
    status, v = request("POST", f"{cq}/v1/chatqna", ask, timeout=30)
    tally.saw("chatqna with llm down", status, allow_5xx=status in (502, 504))
    tally.check(status in (502, 504) and time.time() - t0 < 10, f"llm down: {status} after {time.time() - t0:.1f} s")
    llm.wait_back(restarts)
    status, v = request("POST", f"{cq}/v1/chatqna", ask, timeout=120)
    tally.saw("chatqna after llm restart", status)
    tally.check(status == 200, f"chatqna after the llm came back: {status} {str(v)[:200]}")

    # A downstream stopped (SIGSTOP: accepts connections, never answers): bounded by the node
    # timeout; then continued.
    rerank = stack["rerank"]
    rerank.kill(signal.SIGSTOP)
    try:
        t0 = time.time()
        status, v = request("POST", f"{cq}/v1/chatqna", ask, timeout=120)
        tally.saw("chatqna with rerank stopped", status, allow_5xx=status in (502, 504))
        took = time.time() - t0
        print(f"  rerank stopped (SIGSTOP): {status} after {took:.0f} s: {str(v)[:160]}", flush=True)
        tally.check(status == 504 and "rerank" in json.dumps(v), f"rerank stopped: {status} {str(v)[:200]}")
    finally:
        rerank.kill(signal.SIGCONT)

    # Streams dropped by their clients after the first bytes: nothing leaks, the service keeps
    # serving, pending returns to zero.
    host, port = "127.0.0.1", stack["llm"].port
    body = json.dumps({"messages": "Count to one hundred.", "stream": True, "max_tokens": 64}).encode()

    def drop(_):
        """One stream, dropped as soon as its first token event arrives: its status."""
        try:
            with socket.create_connection((host, port), timeout=60) as s:
                s.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode() + body
                )
                got = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                    head, sep, rest = got.partition(b"\r\n\r\n")
                    if not sep:
                        continue
                    status = int(head.split(b" ")[1])
                    # A refusal (429 when the queue is full) is a whole answer, not a stream.
                    if status != 200 or b"data:" in rest:
                        return status
                return None
        except (OSError, ValueError, IndexError):
            return None

    t0 = time.time()
    with cf.ThreadPoolExecutor(8) as ex:
        statuses = list(ex.map(drop, range(dropped_streams)))
    for st in statuses:
        tally.saw("dropped stream", st)
    counts = Counter(statuses)
    tally.check(set(counts) <= {200, 429} and counts[200] > 0, f"dropped streams: {dict(counts)}")
    # The slots of the dropped streams come back: the llm answers a new request soon.
    recovered = None
    for _ in range(120):
        status, v = request("POST", f"{stack['llm'].url}/v1/chat/completions",
                            {"messages": "Say hi.", "max_tokens": 4}, timeout=60)
        tally.saw("llm after dropped streams", status)
        if status == 200:
            recovered = time.time() - t0
            break
        time.sleep(1)
    tally.check(recovered is not None, f"llm did not answer within 120 s of {dropped_streams} dropped streams")
    stuck = ["?"]
    for _ in range(60):
        _, metrics = request("GET", f"{stack['llm'].url}/metrics")
        inflight = [ln for ln in str(metrics).splitlines() if ln.startswith("comps_http_requests_in_flight{")]
        stuck = [ln for ln in inflight if "/metrics" not in ln and not ln.endswith(" 0")]
        if not stuck:
            break
        time.sleep(1)
    tally.check(not stuck, f"requests still counted in flight 60 s after the drops: {stuck}")
    print(f"  {dropped_streams} streams dropped after their first event: {dict(counts)}; the llm answered again "
          f"{recovered or 0:.0f} s after the first drop, nothing left in flight", flush=True)

    # Overload past the limit: a chatqna allowing 4 requests at once, 32 arriving together.
    own = stack["chatqna"].info
    small = Megaservice("chatqna-small", own["argv"], stack.logs,
                        dict(own["env"], COMPS_MAX_CONCURRENT_REQUESTS="4", CHATQNA_NODE_TIMEOUT="120"))
    small.start()
    try:
        results = load(f"{small.url}/v1/chatqna", ask, 32, 32, 120)
        counts = Counter(s for s, _ in results)
        for status, _ in results:
            tally.saw("overload", status)
        tally.check(counts[429] > 0 and counts[200] > 0 and set(counts) <= {200, 429},
                    f"overload past the limit: {dict(counts)}")
        print(f"  32 at once against a limit of 4: {dict(counts)}", flush=True)
    finally:
        small.stop()

    # kill -9 during ingest: every acknowledged file is still there after the restart.
    ret = stack["retriever"]
    acked = []
    deadline = time.time() + 60

    def ingest_loop():
        i = 0
        while time.time() < deadline:
            name = f"ledger-{i}.txt"
            body, hdrs = multipart([(name, f"Ledger page {i} records {i * 7} barrels of brine.".encode())])
            status, _ = request("POST", f"{ret.url}/v1/dataprep/ingest", body, hdrs, timeout=30)
            if status == 200:
                acked.append(name)
            elif status is None:
                return
            i += 1

    for _ in range(3):
        restarts = ret.restarts
        with cf.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(ingest_loop)
            time.sleep(1.5)
            ret.kill(signal.SIGKILL)
            fut.result()
        ret.wait_back(restarts)
    status, files = request("POST", f"{ret.url}/v1/dataprep/get", {})
    tally.saw("list after kill -9", status)
    have = {f.get("name") for f in files} if isinstance(files, list) else set()
    missing = [n for n in acked if n not in have]
    tally.lost.extend(missing)
    tally.check(not missing, f"acknowledged files lost over kill -9: {missing}")
    print(f"  kill -9 x3 during ingest: {len(acked)} files acknowledged, {len(missing)} lost", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target/debug"), help="where the service binaries are")
    ap.add_argument("--soak", action="store_true", help="the longer version: more examples, more streams")
    ap.add_argument("--only", default="openapi,fuzz,attacks,faults", help="phases to run, comma-separated")
    ap.add_argument("--st", default=shutil.which("st") or "st", help="the schemathesis command")
    args = ap.parse_args()
    if os.sep in args.st:
        args.st = os.path.abspath(args.st)
    phases = set(args.only.split(","))
    examples = 200 if args.soak else 25
    budget_s = 600 if args.soak else 30
    dropped = 10_000 if args.soak else 1000
    tally = Tally()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="comps-hostile-") as tmp:
        work = Path(tmp)
        stack = Stack(args.bin, work)
        print("== starting the stack", flush=True)
        try:
            stack.start()
            if "openapi" in phases:
                phase_openapi(stack, tally)
            if "fuzz" in phases:
                phase_fuzz(stack, tally, examples, budget_s, args.st)
            if "attacks" in phases:
                phase_attacks(stack, tally)
            if "faults" in phases:
                phase_faults(stack, tally, dropped)
        finally:
            stack.stop()
            if tally.failures:
                keep = Path(tempfile.gettempdir()) / "comps-hostile-logs"
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(work / "logs", keep)
                print(f"service logs kept in {keep}")
    n = sum(tally.statuses.values())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items(), key=lambda kv: str(kv[0])))
    print()
    print(f"hostile suite: {n} requests in {time.time() - started:.0f} s, statuses {{{statuses}}}, "
          f"5xx={len(tally.unexpected_5xx)}, hangs={len(tally.hangs)}, lost={len(tally.lost)}, "
          f"failed checks={len(tally.failures)}")
    for what in tally.unexpected_5xx[:20]:
        print(f"  unexpected 5xx: {what}")
    for what in tally.hangs[:20]:
        print(f"  no answer: {what}")
    return 1 if (tally.unexpected_5xx or tally.hangs or tally.lost or tally.failures) else 0


if __name__ == "__main__":
    sys.exit(main())
