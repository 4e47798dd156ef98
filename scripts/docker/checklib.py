"""What the container checks share (compose_check.py, prometheus_check.py, swarm_check.py): a JSON
POST that reports instead of raising, and polling a probe until a deadline."""

import json
import time
import urllib.error
import urllib.request


def post_json(url, body, timeout=120):
    """POST `body` as JSON: (status, body text); (0, the error) when no answer came."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, f"{type(e).__name__}: {e}"


def poll(what, probe, deadline_s, fail, every=1.0):
    """Call `probe` until it returns (True, detail), printing how long it took; past `deadline_s`
    call `fail` with its last detail. A probe that raises a network or parse error counts as not
    yet."""
    t = time.time()
    while True:
        try:
            ok, detail = probe()
        except (OSError, RuntimeError, ValueError) as e:
            ok, detail = False, f"{type(e).__name__}: {e}"
        if ok:
            print(f"ok: {what} after {time.time() - t:.0f} s ({detail})", flush=True)
            return
        if time.time() - t > deadline_s:
            fail(f"{what} within {deadline_s} s; last: {detail}")
        time.sleep(every)
