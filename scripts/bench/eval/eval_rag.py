"""RAG evaluation of the ChatQnA pipeline on our own question set (scripts/bench/eval/data/).

For each model: the pipeline as `comps up` runs it (benchlib.ChatQnA: free loopback ports, a
fresh data dir, no guardrail), the four documents ingested through chatqna's dataprep route with the default
chunking, then every question asked once non-streamed (the answer, its latency, and the prompt
the LLM rendered, read from comps-llm's JSON debug log) and once streamed (time to the first
data event; the stream is closed there).

  retrieval hit   the question's evidence string is in the prompt that reached the LLM
  answer correct  the answer holds one of the accepted strings (case-insensitive; a number
                  must not be part of a longer number)

    python3 scripts/bench/eval/eval_rag.py [--models a,b] [--bin DIR] [--out FILE] [--limit N] [--set K=V ...]

--set puts an environment variable into every service's environment (each flag of a service
has one), e.g. --set CHATQNA_RAG_TEMPLATE=comps, to compare a setting against the default.
"""

import argparse
import html
import json
import math
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT / "tests" / "hostile"))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
from suite import multipart, request  # noqa: E402
from benchlib import ChatQnA  # noqa: E402

DEFAULT_MODELS = "models/Qwen2.5-Coder-0.5B-Instruct,models/SmolLM2-135M-Instruct"
BINARIES = ("comps-embedding", "comps-retriever", "comps-rerank", "comps-llm", "chatqna", "comps")
ASK = {"stream": False, "temperature": 0, "max_tokens": 64}
TIMEOUT = 600


def norm(s):
    return " ".join(s.split())


def doc_text(name):
    """The text of a document as written (the PDF's from its source), whitespace collapsed."""
    path = DATA / "pdf-source" / (Path(name).stem + ".txt") if name.endswith(".pdf") else DATA / name
    text = path.read_text(encoding="utf-8")
    if name.endswith(".html"):
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return norm(text)


def load_questions(path):
    qs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = {d: doc_text(d) for d in {q["doc"] for q in qs}}
    bad = [q["id"] for q in qs if norm(q["evidence"]) not in texts[q["doc"]]
           or norm(q["evidence"]) in norm(q["question"]) or not q["answer"]]
    if bad or len({q["id"] for q in qs}) != len(qs):
        raise SystemExit(f"question set: evidence not in its document, in the question, or no answer: {bad}")
    return qs


def answered(text, answers):
    t = text.lower()
    for a in answers:
        pat = re.escape(a.lower())
        pat = (r"(?<!\d)" if a[0].isdigit() else "") + pat + (r"(?!\d)" if a[-1].isdigit() else "")
        if re.search(pat, t):
            return True
    return False


def pct(values, p):
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)] if v else None


class PromptLog:
    """The prompts comps-llm logged since the previous call."""

    def __init__(self, path):
        self.path, self.pos = path, 0

    def new(self):
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        data = data[: data.rfind(b"\n") + 1]  # a partial last line waits for the next call
        self.pos += len(data)
        out = []
        for line in data.splitlines():
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("message") == "rendered prompt":
                out.append(v.get("prompt", ""))
        return out


def ttft(url, question):
    """Seconds to the first `data:` event of a streamed answer (OPEA framing is checked)."""
    body = json.dumps({"messages": question, **ASK, "stream": True}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        for line in r:
            if line.startswith(b"data: "):
                if not (line.startswith(b"data: b") or line.strip() == b"data: [DONE]"):
                    raise ValueError(f"not OPEA framing: {line[:80]!r}")
                return time.perf_counter() - t0
    raise ValueError("the stream ended without a data event")


def ask(url, log, q):
    log.new()  # drop what earlier requests logged
    t0 = time.perf_counter()
    status, body = request("POST", url, {"messages": q["question"], **ASK}, timeout=TIMEOUT)
    latency = time.perf_counter() - t0
    prompts = log.new()
    r = {"id": q["id"], "doc": q["doc"], "question": q["question"], "evidence": q["evidence"],
         "accepted": q["answer"], "answer": "", "error": None, "latency_s": round(latency, 3), "ttft_s": None}
    if status == 200:
        r["answer"] = body["choices"][0]["message"]["content"]
    else:
        r["error"] = f"status {status}: {str(body)[:200]}"
    prompt = prompts[-1] if prompts else ""
    r["retrieved"] = norm(q["evidence"]) in norm(prompt)
    r["correct"] = r["error"] is None and answered(r["answer"], q["answer"])
    if not (r["retrieved"] and r["correct"]):
        r["prompt"] = prompt or None
    try:
        r["ttft_s"] = round(ttft(url, q["question"]), 3)
    except Exception as e:  # noqa: BLE001 (recorded, the run goes on)
        r["error"] = r["error"] or f"stream: {e}"
    return r


def run_model(model, bin_dir, questions, settings=None, embedder=None, top_n=3):
    name = model.name
    print(f"\n== {name} ({bin_dir}) ==", flush=True)
    work = Path(tempfile.mkdtemp(prefix="eval-rag-"))
    # The LLM's rendered prompts come from its JSON debug log; `settings` go to every service.
    env = {"COMPS_LOG_FORMAT": "json", "RUST_LOG": "info,comps_llm=debug", **(settings or {})}
    up = ["--llm-model", model, "--embedding-model", embedder, "--top-n", top_n, "--no-guardrail", "--no-ingest"]
    ok = False
    try:
        with ChatQnA(work, up, bin_dir=bin_dir, env=env, timeout=TIMEOUT) as urls:
            ingest_s, results = evaluate(urls["chatqna"], work / "logs" / "llm.log", questions)
        ok = True
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  logs kept in {work / 'logs'}", file=sys.stderr)
    return summarize(name, str(model), ingest_s, results)


def evaluate(base, llm_log, questions):
    """Ingest the questions' documents, then ask every question; returns the ingest time and
    the results."""
    t0 = time.perf_counter()
    for doc in sorted({q["doc"] for q in questions}):
        body, hdrs = multipart([(doc, (DATA / doc).read_bytes())])
        status, answer = request("POST", f"{base}/v1/dataprep/ingest", body, hdrs, timeout=TIMEOUT)
        if status != 200:
            raise SystemExit(f"ingesting {doc}: {status} {answer}")
    ingest_s = time.perf_counter() - t0
    print(f"  ingested {len({q['doc'] for q in questions})} documents in {ingest_s:.1f} s", flush=True)
    url = f"{base}/v1/chatqna"
    log = PromptLog(llm_log)
    ask(url, log, questions[0])  # warm-up, not counted
    results = []
    for q in questions:
        r = ask(url, log, q)
        results.append(r)
        print(f"  {r['id']:<8} {'hit ' if r['retrieved'] else 'MISS'} {'ok   ' if r['correct'] else 'WRONG'} "
              f"{r['latency_s']:6.2f} s  ttft {r['ttft_s'] or float('nan'):5.2f} s  "
              f"{norm(r['error'] or r['answer'])[:70]!r}", flush=True)
    return ingest_s, results


def rate(rs, key):
    return sum(r[key] for r in rs) / len(rs)


def summarize(name, path, ingest_s, results):
    lat = [r["latency_s"] for r in results if r["error"] is None]
    tt = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    docs = sorted({r["doc"] for r in results})
    per_doc = {d: {"questions": len([r for r in results if r["doc"] == d]),
                   "retrieval_hit_rate": rate([r for r in results if r["doc"] == d], "retrieved"),
                   "answer_accuracy": rate([r for r in results if r["doc"] == d], "correct")} for d in docs}
    s = {"model": name, "path": path, "questions": len(results), "ingest_s": round(ingest_s, 2),
         "retrieval_hit_rate": rate(results, "retrieved"), "answer_accuracy": rate(results, "correct"),
         "errors": sum(r["error"] is not None for r in results), "per_doc": per_doc,
         "latency_s": {"p50": pct(lat, 50), "p95": pct(lat, 95)},
         "ttft_s": {"p50": pct(tt, 50), "p95": pct(tt, 95)}, "results": results}
    report(s)
    return s


def frac(rs, key):
    n = sum(r[key] for r in rs)
    return f"{n}/{len(rs)} {100 * n / len(rs):5.1f}%"


def secs(v):
    return "-" if v is None else f"{v:.2f}"


def report(s):
    rs = s["results"]
    errors = f", {s['errors']} requests failed" if s["errors"] else ""
    print(f"\n  {s['model']}: retrieval hit rate {frac(rs, 'retrieved')}, answer accuracy {frac(rs, 'correct')}{errors}")
    print(f"  {'document':<26} {'retrieval':>13} {'answer':>13}")
    for d in s["per_doc"]:
        dr = [r for r in rs if r["doc"] == d]
        print(f"  {d:<26} {frac(dr, 'retrieved'):>13} {frac(dr, 'correct'):>13}")
    print(f"  latency (non-streamed)  p50 {secs(s['latency_s']['p50'])} s  p95 {secs(s['latency_s']['p95'])} s")
    print(f"  TTFT (streamed)         p50 {secs(s['ttft_s']['p50'])} s  p95 {secs(s['ttft_s']['p95'])} s")
    misses = [r for r in rs if not r["retrieved"]]
    if misses:
        print("  retrieval misses (evidence not in the LLM's prompt):")
        for r in misses:
            print(f"    {r['id']}: {r['question']}  [evidence: {r['evidence']}]")
    wrong = [r for r in rs if not r["correct"]]
    if wrong:
        print("  answer misses:")
        for r in wrong:
            print(f"    {r['id']}{'' if r['retrieved'] else ' (not retrieved)'}: {r['question']}  "
                  f"want {r['accepted']}, got {norm(r['error'] or r['answer'])[:100]!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model paths (relative to the repo)")
    ap.add_argument("--bin", help="directory of the binaries (default target/release if complete, else target/debug)")
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "eval-rag.json"))
    ap.add_argument("--questions", default=str(DATA / "questions.jsonl"))
    ap.add_argument("--limit", type=int, help="ask only the first N questions of each document")
    ap.add_argument("--embedder", default="models/multilingual-e5-small",
                    help="the embedding (and bi-encoder rerank) model, as scripts/chatqna.sh runs it")
    ap.add_argument("--top-n", type=int, default=3, help="chunks reaching the LLM (chatqna's --top-n)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for every service (repeatable)")
    args = ap.parse_args()
    settings = dict(kv.split("=", 1) for kv in args.set)

    release = ROOT / "target" / "release"
    bin_dir = Path(args.bin).resolve() if args.bin else (
        release if all((release / b).exists() for b in BINARIES) else ROOT / "target" / "debug")
    missing = [b for b in BINARIES if not (bin_dir / b).exists()]
    if missing:
        raise SystemExit(f"{bin_dir} lacks {', '.join(missing)}")
    models = [m if m.is_absolute() else ROOT / m for m in map(Path, args.models.split(","))]
    for m in models:
        if not m.exists():
            raise SystemExit(f"no model at {m} (bash scripts/fetch-models.sh)")
    questions = load_questions(Path(args.questions))
    if args.limit:
        questions = [q for q in questions if int(q["id"].rsplit("-", 1)[1]) <= args.limit]
    print(f"{len(questions)} questions on {len({q['doc'] for q in questions})} documents, "
          f"{len(models)} model(s), binaries in {bin_dir}")

    if settings:
        print(f"settings: {settings}")
    embedder = Path(args.embedder) if Path(args.embedder).is_absolute() else ROOT / args.embedder
    print(f"embedder {embedder.name}, top_n {args.top_n}")
    summaries = [run_model(m, bin_dir, questions, settings, embedder, args.top_n) for m in models]

    print(f"\n{'model':<30} {'retrieval':>13} {'answer':>13} {'lat p50':>8} {'lat p95':>8} "
          f"{'TTFT p50':>9} {'TTFT p95':>9}")
    for s in summaries:
        rs = s["results"]
        print(f"{s['model']:<30} {frac(rs, 'retrieved'):>13} {frac(rs, 'correct'):>13} "
              f"{secs(s['latency_s']['p50']):>8} {secs(s['latency_s']['p95']):>8} "
              f"{secs(s['ttft_s']['p50']):>9} {secs(s['ttft_s']['p95']):>9}   (seconds)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bin": str(bin_dir), "questions": len(questions), "settings": settings,
                               "embedder": embedder.name, "top_n": args.top_n,
                               "models": summaries},
                              ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
