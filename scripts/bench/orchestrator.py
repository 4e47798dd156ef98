"""The orchestrator on a ChatQnA-like 4-hop chain (embedding -> retriever -> rerank -> llm) of
mock backends in OPEA's microservice formats, served by comps-flow from a YAML flow.

Prints req/s, p50/p90/p99 through the megaservice at c=1 and c=32, streamed (32 tokens) and
not, and the latency the megaservice adds at c=1 over calling the four mocks directly
(the sum of each hop's p50 measured alone with the same body it receives in the chain).
Then the cost of tracing: c=32 with OTLP export off and on (every span sent to a local sink),
alternating (BENCH_TRACING=0 skips it)."""

import http.server
import os
import sys
import tempfile
import threading

from benchlib import HEADER, RELEASE, Procs, free_port, post, row, wrk

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
TOKENS = 32


class Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that counts what it is sent (the cost is the sender's)."""
    received = 0

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        Sink.received += n
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def tracing_cost(procs, flow_path, m):
    """The same c=32 runs with tracing off and with every span exported to a local sink."""
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{sink.server_address[1]}"
    query = {"text": "What is the revenue of Nike in 2023?"}
    print("\ntracing off vs on (OTLP to a local sink), c=32, alternating runs:")
    rps = {"off": [], "on": []}
    for _ in range(2):
        for mode in ("off", "on"):
            port = free_port()
            env = {"RUST_LOG": "warn"}
            if mode == "on":
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
            p = procs.start([f"{RELEASE}/comps-flow", "--config", flow_path, "--host", "127.0.0.1",
                             "--port", str(port)], port, env=env)
            for stream in (False, True):
                body = dict(query, stream=True) if stream else query
                r = wrk(f"http://127.0.0.1:{port}/v1/flow", body, 32, SECONDS, threads=2)
                rps[mode].append((stream, r["rps"], r["p99"]))
                print(row(f"tracing {mode} {'streamed' if stream else 'non-streamed'} c=32", r), flush=True)
            p.terminate()
            p.wait(timeout=10)
    for stream in (False, True):
        off = [x[1] for x in rps["off"] if x[0] == stream]
        on = [x[1] for x in rps["on"] if x[0] == stream]
        kind = "streamed" if stream else "non-streamed"
        print(f"{kind:<14} tracing on / off: {sum(on) / sum(off):.2f}x req/s ({sum(off) / len(off):.0f} -> {sum(on) / len(on):.0f})")
    print(f"spans exported: {Sink.received / 1e6:.1f} MB of OTLP protobuf")
    sink.shutdown()


def main():
    with Procs() as procs:
        mock_port, flow_port = free_port(), free_port()
        procs.start([f"{RELEASE}/mock-backends", "--port", str(mock_port), "--tokens", str(TOKENS)], mock_port,
                    env={"RUST_LOG": "warn"})
        m = f"http://127.0.0.1:{mock_port}"
        flow = (
            "opea_micro_services:\n"
            f"  embedding: {{endpoint: {m}/v1/embeddings, service_type: EMBEDDING}}\n"
            f"  retriever: {{endpoint: {m}/v1/retrieval, service_type: RETRIEVER}}\n"
            f"  rerank: {{endpoint: {m}/v1/reranking, service_type: RERANK}}\n"
            f"  llm: {{endpoint: {m}/v1/chat/completions, service_type: LLM}}\n"
            "opea_mega_service:\n"
            "  mega_flow:\n"
            "    - embedding >> retriever >> rerank >> llm\n"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(flow)
            flow_path = f.name
        try:
            procs.start([f"{RELEASE}/comps-flow", "--config", flow_path, "--host", "127.0.0.1",
                         "--port", str(flow_port)], flow_port, env={"RUST_LOG": "warn"})
            mega = f"http://127.0.0.1:{flow_port}/v1/flow"

            # The bodies each hop receives in the chain, captured by walking it once by hand.
            query = {"text": "What is the revenue of Nike in 2023?"}
            embed_out = post(f"{m}/v1/embeddings", query)
            retr_out = post(f"{m}/v1/retrieval", embed_out)
            rerank_out = post(f"{m}/v1/reranking", retr_out)
            llm_in = dict(rerank_out, stream=False, max_tokens=1024)
            llm_in_stream = dict(rerank_out, stream=True, max_tokens=1024)
            answer = post(mega, query)
            assert answer["object"] == "chat.completion", answer
            streamed = post(mega, dict(query, stream=True))
            assert streamed.count("data: ") == TOKENS + 2 and streamed.endswith("data: [DONE]\n\n"), streamed[:200]

            print(HEADER)
            hops = [("embedding", f"{m}/v1/embeddings", query), ("retriever", f"{m}/v1/retrieval", embed_out),
                    ("rerank", f"{m}/v1/reranking", retr_out)]
            direct = {}
            for stream, llm_body in ((False, llm_in), (True, llm_in_stream)):
                total = 0.0
                for name, url, body in hops + [("llm", f"{m}/v1/chat/completions", llm_body)]:
                    if name != "llm" and stream:
                        total += direct[(name, False)]["p50"]
                        continue
                    r = wrk(url, body, 1, SECONDS, threads=1)
                    direct[(name, stream)] = r
                    total += r["p50"]
                    print(row(f"direct {name}{' (stream)' if stream else ''} c=1", r), flush=True)
                direct[("sum", stream)] = total

            results = {}
            for stream in (False, True):
                for c in (1, 32):
                    body = dict(query, stream=True) if stream else query
                    r = wrk(mega, body, c, SECONDS, threads=1 if c == 1 else 2)
                    results[(stream, c)] = r
                    print(row(f"megaservice 4-hop {'streamed' if stream else 'non-streamed'} c={c}", r), flush=True)
            print()
            for stream in (False, True):
                kind = "streamed (32 tokens)" if stream else "non-streamed"
                added = results[(stream, 1)]["p50"] - direct[("sum", stream)]
                print(f"{kind:<22} c=1 p50 {results[(stream, 1)]['p50']:.3f} ms vs direct 4 hops "
                      f"{direct[('sum', stream)]:.3f} ms: added {added * 1000:+.0f} us")
            for stream, target in ((False, 2000), (True, 700)):
                kind = "streamed" if stream else "non-streamed"
                rps = results[(stream, 32)]["rps"]
                print(f"{kind:<22} c=32 {rps:.0f} req/s (target >= {target}): {'OK' if rps >= target else 'BELOW TARGET'}")
            if os.environ.get("BENCH_TRACING", "1") != "0":
                tracing_cost(procs, flow_path, m)
        finally:
            os.unlink(flow_path)


if __name__ == "__main__":
    main()
