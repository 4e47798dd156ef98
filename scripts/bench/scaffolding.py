"""What comps-core's scaffolding (health/stats/metrics, error envelope, limits, auth check,
request ids, CORS, tracing, body timing) costs per request: the `echo` example against the
same handler on bare axum (`bare_echo`), both release builds, same wrk load."""

import sys

from benchlib import HEADER, RELEASE, Procs, free_port, post, row, wrk

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 8


def main():
    body = {"text": "hello, "}
    with Procs() as procs:
        p_comps, p_bare = free_port(), free_port()
        procs.start([f"{RELEASE}/examples/echo", "--host", "127.0.0.1", "--port", str(p_comps)], p_comps,
                    env={"RUST_LOG": "warn"})
        procs.start([f"{RELEASE}/examples/bare_echo", str(p_bare)], p_bare)
        comps_url = f"http://127.0.0.1:{p_comps}/v1/echo"
        bare_url = f"http://127.0.0.1:{p_bare}/v1/echo"
        assert post(comps_url, body)["text"] == "hello, opea project!"
        assert post(bare_url, body)["text"] == "hello, opea project!"
        print(HEADER)
        results = {}
        for c in (1, 32):
            for name, url in (("bare axum", bare_url), ("comps-core echo", comps_url)):
                r = wrk(url, body, c, SECONDS)
                results[(name, c)] = r
                print(row(f"{name} c={c}", r), flush=True)
        print()
        for c in (1, 32):
            b, s = results[("bare axum", c)], results[("comps-core echo", c)]
            cost_us = (1e6 / s["rps"] - 1e6 / b["rps"]) if c == 32 else (s["p50"] - b["p50"]) * 1000
            what = "per-request CPU cost (1/rps diff)" if c == 32 else "added p50 latency"
            print(f"c={c:<3} throughput {s['rps'] / b['rps']:.2f}x of bare axum; {what}: {cost_us:+.1f} us")


if __name__ == "__main__":
    main()
