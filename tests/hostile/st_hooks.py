"""Schemathesis hooks for the hostile suite (loaded through SCHEMATHESIS_HOOKS).

- Generation is capped: a generated chat request may ask for up to 8 tokens (an absent
  `max_tokens` means OPEA's 1024), so a fuzzing run stays bounded in time on a 2-core machine.
  Invalid values (wrong types, negatives) are left alone: they must still be refused.
- Every answer's status, and every request that got no answer in time, is appended to the file
  named by COMPS_HOSTILE_LOG, one JSON object a line, for the suite's summary.
"""

import json
import os

import schemathesis

MAX_TOKENS = 8
_LOG = os.environ.get("COMPS_HOSTILE_LOG")


def _record(entry):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def _llm_body(body):
    return isinstance(body, dict) and any(k in body for k in ("messages", "query", "max_tokens", "max_new_tokens"))


@schemathesis.hook
def map_body(context, body):
    if _llm_body(body):
        body = dict(body)
        for key in ("max_tokens", "max_new_tokens", "max_completion_tokens"):
            v = body.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > MAX_TOKENS:
                body[key] = MAX_TOKENS
        if "max_tokens" not in body:
            body["max_tokens"] = MAX_TOKENS
    return body


@schemathesis.hook
def after_call(context, case, response):
    _record({"op": f"{case.method} {case.path}", "status": response.status_code})


@schemathesis.hook
def after_network_error(context, case, request):
    _record({"op": f"{case.method} {case.path}", "status": None})
