"""The Grafana dashboard and the Prometheus recording rules of deploy/observability/ read only
metrics that exist: every metric name in every PromQL expression (the dashboard's targets and
the rules' exprs) is a recording rule of rules.yml or a series our services expose, taken from
real /metrics texts that the caller scraped (scripts/dev/metrics.sh saves them after real
traffic). Also: the dashboard is well-formed Grafana JSON (uid, title, panels with unique ids
and non-overlapping gridPos, every target an expr on the provisioned data source uid), every
recording rule is on a dashboard, and promtool checks the config and the rules and runs the
rules' unit tests (tests/observability/rules_test.yml) when it is installed.

  python3 tests/observability/dashboard_test.py --metrics-dir DIR     # DIR/<service>.txt, one a service
  python3 tests/observability/dashboard_test.py --urls llm=http://127.0.0.1:9009/metrics ...

Standard library only. Exits non-zero on any finding."""

import argparse
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
CONFIG = OBS / "prometheus.yml"
RULES = OBS / "rules.yml"
RULES_TEST = ROOT / "tests" / "observability" / "rules_test.yml"
DASHBOARDS = OBS / "grafana" / "dashboards"
DATASOURCES = OBS / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
SERVICES = ("chatqna", "embedding", "retriever", "rerank", "llm", "guardrail")
# Prometheus writes these for every target itself; no service exposes them.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                 "scrape_series_added"}
# Words of PromQL that look like metric names: aggregations, binary operators and modifiers. A
# function is told by the `(` after it (PromQL has no other use of a name before a parenthesis);
# these are the ones that need no parenthesis right after them (`sum by (x) (...)`, `a and b`).
PROMQL_WORDS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "atan2", "inf", "nan"}
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap", "piechart"}
NAME = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr):
    """The metric names a PromQL expression selects (recording rules included)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers: label names, not metrics
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery windows, Grafana's [$__rate_interval]
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # other Grafana variables
    names = set()
    for m in NAME.finditer(e):
        if m.group(0).lower() in PROMQL_WORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group(0))
    return names


def selftest():
    cases = {
        'histogram_quantile(0.95, sum by (node, le) (rate(megaservice_node_latency_seconds_bucket[1m])))':
            {"megaservice_node_latency_seconds_bucket"},
        'sum(rate(comps_http_requests_total{status=~"5..", route="/v1/x"}[$__rate_interval])) by (job)':
            {"comps_http_requests_total"},
        'a:b:c / clamp_min(sum without (instance) (d_total offset 5m), 1e-9) > bool 0.5 and on (job) up':
            {"a:b:c", "d_total", "up"},
        'llm_kv_cache_tokens / ignoring (x) group_left (model) llm_kv_cache_capacity_tokens':
            {"llm_kv_cache_tokens", "llm_kv_cache_capacity_tokens"},
        'max_over_time(x_seconds[5m:30s]) or vector(0)': {"x_seconds"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        assert got == want, f"metric_names({expr!r}) = {got}, expected {want}"


def exposed_series(texts):
    """{series name: services}: what the /metrics texts let a query select. A histogram X is
    X_bucket, X_sum and X_count; a summary X, X_sum and X_count."""
    out = {}
    for service, text in texts.items():
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                parts = line.split()
                name, kind = parts[2], parts[3] if len(parts) > 3 else "untyped"
                suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
                for s in suffixes.get(kind, ("",)):
                    out.setdefault(name + s, set()).add(service)
            elif line.strip() and not line.startswith("#"):
                m = NAME.match(line)
                if m:
                    out.setdefault(m.group(0), set()).add(service)
    return out


def family(series):
    return re.sub(r"_(bucket|sum|count)$", "", series)


def yaml_scalars(text, key):
    """The values of `key:` in a YAML file of the shape ours have: plain or quoted on the key's
    line, or a block (`|` / `>`, chomping indicators allowed) on the lines indented below it."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        m = re.match(rf"^(\s*)(?:-\s+)?{key}:\s*(.*?)\s*$", line)
        if not m:
            continue
        indent, value = len(m.group(1)), m.group(2)
        if re.fullmatch(r"[|>][-+]?", value):
            block = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                block.append(nxt.strip())
            value = " ".join(b for b in block if b)
        elif value[:1] in "'\"" and value[-1:] == value[:1]:
            value = value[1:-1]
        out.append(value)
    return out


class Checks:
    def __init__(self):
        self.ok = self.failed = 0

    def __call__(self, cond, what, detail=""):
        if cond:
            self.ok += 1
            print(f"  ok    {what}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {what}" + (f": {detail}" if detail else ""), flush=True)


def scrape(args):
    texts = {}
    if args.metrics_dir:
        for f in sorted(Path(args.metrics_dir).iterdir()):
            if f.is_file():
                texts[f.stem] = f.read_text()
    for spec in args.urls or ():
        name, _, url = spec.partition("=")
        if not url:
            sys.exit(f"--urls takes name=url, not {spec!r}")
        if not url.rstrip("/").endswith("/metrics"):
            url = url.rstrip("/") + "/metrics"
        texts[name] = urllib.request.urlopen(url, timeout=10).read().decode()
    return texts


def promtool(check, what, argv, expect=None):
    r = subprocess.run(["promtool", *argv], capture_output=True, text=True, timeout=120)
    out = (r.stdout + r.stderr).strip()
    check(r.returncode == 0 and (expect is None or expect(out)), what, out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--metrics-dir", help="saved /metrics texts, one file a service, named after it")
    src.add_argument("--urls", nargs="+", metavar="NAME=URL", help="scrape these /metrics instead")
    args = ap.parse_args()
    selftest()
    check = Checks()

    texts = scrape(args)
    series = exposed_series(texts)
    missing = [s for s in SERVICES if s not in texts]
    check(texts and all(t.strip() for t in texts.values()), f"metrics of {len(texts)} service(s): {', '.join(texts)}",
          "no metrics text, or an empty one")
    if missing:
        print(f"  note  no metrics of {', '.join(missing)}: names only they expose will be unknown", flush=True)

    rules_text = RULES.read_text()
    records, rule_exprs = yaml_scalars(rules_text, "record"), yaml_scalars(rules_text, "expr")
    check(records and len(records) == len(rule_exprs) and len(set(records)) == len(records),
          f"rules.yml: {len(records)} recording rules, each with one expr, names unique",
          f"{len(records)} records, {len(rule_exprs)} exprs")
    ds_uids = yaml_scalars(DATASOURCES.read_text(), "uid")
    check(len(ds_uids) == 1, f"one provisioned data source uid: {ds_uids}")
    ds_uid = ds_uids[0] if ds_uids else None

    # Every PromQL expression, with where it is.
    exprs = [(f"rule {r}", e) for r, e in zip(records, rule_exprs)]
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    check(dashboards, f"dashboards: {', '.join(d.name for d in dashboards)}")
    for path in dashboards:
        exprs += check_dashboard(check, path, ds_uid)

    known = set(records) | SCRAPE_SERIES | set(series)
    used = set()
    for where, expr in exprs:
        names = metric_names(expr)
        used |= names
        unknown = sorted(names - known)
        check(names and not unknown, f"{where}: {', '.join(sorted(names))}",
              f"not a recording rule nor exposed by any service: {unknown}" if unknown else "no metric in it")
    unread = sorted(set(records) - {n for w, e in exprs if w.startswith("dashboard") for n in metric_names(e)})
    check(not unread, "every recording rule is on a dashboard", f"not on any: {unread}")
    not_shown = sorted({family(s) for s in series} - {family(n) for n in used})
    if not_shown:
        print(f"  note  exposed but on no dashboard nor rule: {', '.join(not_shown)}", flush=True)

    if shutil.which("promtool"):
        out = promtool(check, "promtool check rules", ["check", "rules", str(RULES)])
        m = re.search(r"SUCCESS: (\d+) rules found", out)
        check(m and int(m.group(1)) == len(records), "promtool counts the rules this test read",
              f"promtool: {m and m.group(1)}, this test: {len(records)}")
        promtool(check, "promtool check config (with its rule file)", ["check", "config", str(CONFIG)])
        promtool(check, "promtool test rules (tests/observability/rules_test.yml)", ["test", "rules", str(RULES_TEST)])
    else:
        print("  SKIP  promtool is not installed (Debian: apt-get install prometheus): config and rules unchecked",
              flush=True)

    print(f"dashboard tests: {check.ok} checks passed, {check.failed} failed")
    return 1 if check.failed else 0


def check_dashboard(check, path, ds_uid):
    """Checks one dashboard's structure; returns its (where, expr) pairs."""
    name = f"dashboard {path.name}"
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        check(False, f"{name} is JSON", str(e))
        return []
    check(isinstance(d.get("uid"), str) and 0 < len(d["uid"]) <= 40 and d.get("title"),
          f"{name}: uid {d.get('uid')!r} and title {d.get('title')!r}")
    check(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36,
          f"{name}: schemaVersion {d.get('schemaVersion')}")
    panels = d.get("panels") or []
    ids = [p.get("id") for p in panels]
    check(panels and all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids),
          f"{name}: {len(panels)} panels, ids unique", f"ids {ids}")
    exprs, cells, bad = [], {}, []
    for p in panels:
        title = p.get("title") or f"panel {p.get('id')}"
        g = p.get("gridPos") or {}
        if p.get("type") not in PANEL_TYPES:
            bad.append(f"{title}: type {p.get('type')!r}")
        if not (all(isinstance(g.get(k), int) for k in "hwxy") and g["w"] > 0 and g["h"] > 0 and g["x"] >= 0
                and g["x"] + g["w"] <= 24):
            bad.append(f"{title}: gridPos {g}")
            continue
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    bad.append(f"{title} overlaps {cells[(x, y)]}")
                cells[(x, y)] = title
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != ds_uid:
            bad.append(f"{title}: data source {p.get('datasource')}, not uid {ds_uid}")
        targets = p.get("targets") or []
        if not targets:
            bad.append(f"{title}: no targets")
        if len({t.get("refId") for t in targets}) != len(targets):
            bad.append(f"{title}: refIds not unique")
        for t in targets:
            if not (t.get("expr") or "").strip():
                bad.append(f"{title}: target {t.get('refId')} has no expr")
                continue
            if (t.get("datasource") or {"uid": ds_uid}).get("uid") != ds_uid:
                bad.append(f"{title}: target {t.get('refId')} on data source {t.get('datasource')}")
            exprs.append((f"{name} '{title}' {t.get('refId')}", t["expr"]))
    check(not bad, f"{name}: panel types, gridPos in 24 columns without overlaps, targets with exprs on "
                   f"data source {ds_uid!r}", "; ".join(sorted(set(bad))[:10]))
    return exprs


if __name__ == "__main__":
    sys.exit(main())
