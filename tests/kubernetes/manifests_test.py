#!/usr/bin/env python3
"""What schemas cannot check in the Kubernetes manifests (deploy/kubernetes/).

scripts/dev/kubernetes.sh renders the base and every overlay with `kubectl kustomize` into one
file each (DIR/<name>.yaml) and validates every document against the Kubernetes schemas; this
reads those renders and checks how the objects fit together and with docker-compose.yaml:

- every container has liveness, readiness and startup probes (the comps services: liveness and
  startup on /v1/health_check, readiness on /v1/health) and CPU / memory requests and limits;
- pods run as a non-root uid, read-only root filesystem, no privilege escalation, ALL
  capabilities dropped;
- graceful shutdown: COMPS_SHUTDOWN_DRAIN_SECS reaches every comps container and the grace
  period leaves room for it and the longest request;
- the retriever: one replica of a StatefulSet with its own disk for the embedded store, a
  Deployment of several on Postgres in overlays/pgvector;
- the models volume (mounted read-only, model directories that scripts/fetch-models.sh
  makes) or, in overlays/remote-backends, the remote URLs instead;
- every ConfigMap, Secret, PVC and volume a pod names exists (or is a Secret the docs say to
  create); Services select pods and target their ports;
- commands, env names and values, ports and Service names match docker-compose.yaml's
  services (chatqna's OPEA names above all);
- NetworkPolicies, evaluated: default deny; only chatqna is reachable from outside the
  namespace (plus /metrics scraping by pods labelled comps-rs/metrics-scraper=true); each
  backend only from its callers;
- every HPA is autoscaling/v2 and targets an existing Deployment; chatqna's scales on
  megaservice_request_pending, which prometheus-adapter's rule serves and chatqna exports;
- a PodDisruptionBudget for every comps workload, none that blocks a drain;
- the kustomizations use only what kustomize v2 (kubectl 1.20) reads as well as v5.

    python3 tests/kubernetes/manifests_test.py --rendered DIR [--repo ROOT]

Prints one line per check and overlay, then "N passed, N failed"; exits 1 on any failure.
Needs PyYAML (scripts/dev/kubernetes.sh runs it in its venv).
"""

import argparse
import os
import re
import sys

import yaml

# The renders and what each is: where the retriever's store is, where the models are, whether
# the guardrail runs.
OVERLAYS = {
    "base": {"namespace": None, "retriever": "embedded", "models": "local", "guardrail": False},
    "local-models": {"namespace": "chatqna", "retriever": "embedded", "models": "local", "guardrail": False},
    "with-guardrails": {"namespace": "chatqna", "retriever": "embedded", "models": "local", "guardrail": True},
    "remote-backends": {"namespace": "chatqna", "retriever": "embedded", "models": "remote", "guardrail": False},
    "pgvector": {"namespace": "chatqna", "retriever": "pgvector", "models": "local", "guardrail": False},
}

COMPS_IMAGE = "comps-rs/comps"
# The services of docker-compose.yaml that run in Kubernetes (not prometheus).
COMPS_SERVICES = ["embedding", "retriever", "rerank", "llm", "guardrail", "chatqna"]
# Env names a Kubernetes container may have beyond its compose service's.
EXTRA_ENV = {
    "*": {"COMPS_SHUTDOWN_DRAIN_SECS"},
    "embedding": {"EMBEDDING_REMOTE_URL", "EMBEDDING_REMOTE_API_KEY"},
    "rerank": {"RERANK_REMOTE_URL", "RERANK_REMOTE_API_KEY"},
    "llm": {"LLM_REMOTE_URL", "LLM_REMOTE_API_KEY", "LLM_REMOTE_MODEL"},
    "retriever": {"PG_PASSWORD", "PG_CONNECTION_STRING", "PG_VECTOR_DIM"},
}
# Compose env names an overlay leaves out on purpose: a remote backend has no model.
MISSING_ENV = {
    "remote-backends": {
        "embedding": {"EMBEDDING_MODEL"},
        "rerank": {"RERANK_MODEL"},
        "llm": {"LLM_MODEL_PATH"},
        "retriever": {"CHUNK_TOKENIZER"},
    },
}
# Env values an overlay sets otherwise than compose's defaults.
CHANGED_ENV = {
    "with-guardrails": {"chatqna": {"CHATQNA_WITH_GUARDRAILS": "true"}},
}
# Secrets the manifests use but do not make: the README says to create them.
EXTERNAL_SECRETS = {"comps-pgvector", "comps-remote-backends"}
# Who calls whom (besides clients -> chatqna and the metrics scraper -> everyone).
CALLS = {
    "chatqna": ["embedding", "retriever", "rerank", "llm", "guardrail"],
    "retriever": ["embedding", "pgvector"],
}
SCRAPER_LABEL = ("comps-rs/metrics-scraper", "true")
PENDING_METRIC = "megaservice_request_pending"
# What kustomize v2.0.3 (kubectl 1.14-1.20) knows of a kustomization.
V2_FIELDS = {
    "apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "commonLabels", "commonAnnotations",
    "bases", "resources", "configMapGenerator", "secretGenerator", "generatorOptions",
    "patchesStrategicMerge", "patchesJson6902", "images", "vars", "crds",
}


# --- helpers --------------------------------------------------------------------------------

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def find(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    return None


def workloads(docs):
    return [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]


def pod_spec(w):
    return w["spec"]["template"]["spec"]


def containers(w):
    return pod_spec(w).get("containers", [])


def is_comps(c):
    return c.get("image", "").split(":")[0] == COMPS_IMAGE


def wname(w):
    return w["metadata"]["name"]


def selector_matches(sel, labels):
    """A LabelSelector (matchLabels, matchExpressions) against a label map; {} matches all."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def quantity(q):
    """A Kubernetes quantity as a float (cores or bytes)."""
    s = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", s)
    if not m or (m.group(2) and m.group(2) not in units):
        raise AssertionError(f"unreadable quantity {s!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def resolved_env(c, docs):
    """A container's environment as the kubelet makes it: envFrom ConfigMaps, then env (values
    from ConfigMap keys resolved; Secret values as <secret:name/key>)."""
    env = {}
    for ef in c.get("envFrom") or []:
        ref = ef.get("configMapRef")
        if ref:
            cm = find(docs, "ConfigMap", ref["name"])
            if cm:
                env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            vf = e["valueFrom"]
            if "configMapKeyRef" in vf:
                r = vf["configMapKeyRef"]
                cm = find(docs, "ConfigMap", r["name"])
                env[e["name"]] = str(((cm or {}).get("data") or {}).get(r["key"], ""))
            elif "secretKeyRef" in vf:
                r = vf["secretKeyRef"]
                env[e["name"]] = f"<secret:{r['name']}/{r['key']}>"
            else:
                env[e["name"]] = "<fieldRef>"
        else:
            env[e["name"]] = ""
    return env


def container_ports(c):
    return {p.get("name"): p["containerPort"] for p in c.get("ports") or []}


def http_port(c):
    ports = container_ports(c)
    if "http" not in ports:
        raise AssertionError(f"container {c['name']} has no port named http")
    return ports["http"]


# --- docker-compose.yaml ----------------------------------------------------------------------

_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_value(v):
    """A compose value with ${VAR:-default} replaced by its default."""
    return _DEFAULT.sub(lambda m: m.group(2) or "", str(v))


def load_compose(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = {}
    for name in COMPS_SERVICES:
        s = doc["services"][name]
        env = {k: compose_value(v) for k, v in (s.get("environment") or {}).items()}
        ports = [int(compose_value(p).rsplit(":", 1)[-1]) for p in s.get("ports") or []]
        out[name] = {"env": env, "ports": ports, "command": s.get("command")}
    return out


# --- checks: each takes (overlay, docs, ctx) and raises AssertionError -------------------------

def check_probes_and_resources(name, docs, ctx):
    for w in workloads(docs):
        for c in containers(w):
            where = f"{w['kind']}/{wname(w)} container {c['name']}"
            for p in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert c.get(p), f"{where}: no {p}"
            if is_comps(c):
                for p, path in (("livenessProbe", "/v1/health_check"), ("startupProbe", "/v1/health_check"),
                                ("readinessProbe", "/v1/health")):
                    got = (c[p].get("httpGet") or {}).get("path")
                    assert got == path, f"{where}: {p} asks {got}, not {path}"
                    port = c[p]["httpGet"].get("port")
                    assert port in container_ports(c) or port in container_ports(c).values(), \
                        f"{where}: {p} port {port} is none of the container's"
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert (res.get(kind) or {}).get(r), f"{where}: no {kind}.{r}"
            for r in ("cpu", "memory"):
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), \
                    f"{where}: {r} request {res['requests'][r]} above its limit {res['limits'][r]}"
        for c in pod_spec(w).get("initContainers") or []:
            assert (c.get("resources") or {}).get("limits"), f"{wname(w)} init container {c['name']}: no limits"


def check_security(name, docs, ctx):
    for w in workloads(docs):
        ps = pod_spec(w)
        psc = ps.get("securityContext") or {}
        assert ps.get("automountServiceAccountToken") is False, \
            f"{wname(w)}: mounts a service account token it does not need"
        for c in containers(w) + (ps.get("initContainers") or []):
            where = f"{wname(w)}/{c['name']}"
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            assert non_root is True, f"{where}: runAsNonRoot is not set"
            assert isinstance(uid, int) and uid > 0, f"{where}: no non-zero runAsUser (the image names no user)"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable"
            assert not sc.get("privileged"), f"{where}: privileged"
            assert "ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where}: capabilities not dropped"
            assert not (sc.get("capabilities") or {}).get("add"), f"{where}: adds capabilities"


def check_graceful_shutdown(name, docs, ctx):
    for w in workloads(docs):
        for c in containers(w):
            if not is_comps(c):
                continue
            env = resolved_env(c, docs)
            drain = env.get("COMPS_SHUTDOWN_DRAIN_SECS")
            assert drain and drain.isdigit() and int(drain) > 0, \
                f"{wname(w)}: COMPS_SHUTDOWN_DRAIN_SECS is {drain!r}"
            grace = pod_spec(w).get("terminationGracePeriodSeconds", 30)
            # Requests that stream an answer (llm, chatqna) last up to a minute.
            longest = 60 if wname(w) in ("llm", "chatqna") else 20
            assert grace >= int(drain) + longest, \
                f"{wname(w)}: terminationGracePeriodSeconds {grace} < drain {drain} + {longest} s of requests"


def check_retriever(name, docs, ctx):
    kind = OVERLAYS[name]["retriever"]
    rs = [w for w in workloads(docs) if wname(w) == "retriever"]
    assert len(rs) == 1, f"{len(rs)} workloads named retriever"
    r = rs[0]
    env = resolved_env(containers(r)[0], docs)
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler")}
    if kind == "embedded":
        assert r["kind"] == "StatefulSet", f"the embedded store's retriever is a {r['kind']}"
        assert r["spec"].get("replicas") == 1, f"replicas {r['spec'].get('replicas')}: the embedded store has one writer"
        assert "retriever" not in hpa_targets, "an HPA scales the single-writer retriever"
        assert "PG_CONNECTION_STRING" not in env, "PG_CONNECTION_STRING set with the embedded store"
        claims = {t["metadata"]["name"] for t in r["spec"].get("volumeClaimTemplates") or []}
        data_dir = env.get("RETRIEVER_DATA_DIR")
        mounts = {m["mountPath"]: m["name"] for m in containers(r)[0].get("volumeMounts") or []}
        assert data_dir in mounts and mounts[data_dir] in claims, \
            f"RETRIEVER_DATA_DIR {data_dir} is not on a volumeClaimTemplate ({claims})"
    else:
        assert r["kind"] == "Deployment", f"the pgvector retriever is a {r['kind']}"
        assert (r["spec"].get("replicas") or 1) >= 2, "the pgvector retriever runs a single replica"
        url = env.get("PG_CONNECTION_STRING", "")
        assert url.startswith("postgres://"), f"PG_CONNECTION_STRING is {url!r}"
        assert "$(PG_PASSWORD)" not in url or "PG_PASSWORD" in env, "PG_CONNECTION_STRING uses an unset $(PG_PASSWORD)"
        pg = find(docs, "StatefulSet", "pgvector")
        assert pg and pg["spec"].get("replicas") == 1, "no one-replica pgvector StatefulSet"
        host = re.match(r"postgres://[^@]*@([^:/]+)", url).group(1)
        assert find(docs, "Service", host), f"PG_CONNECTION_STRING names host {host}, which is no Service"


def check_models(name, docs, ctx):
    mode = OVERLAYS[name]["models"]
    pvc = find(docs, "PersistentVolumeClaim", "comps-models")
    model_env = {"embedding": "EMBEDDING_MODEL", "rerank": "RERANK_MODEL", "llm": "LLM_MODEL_PATH",
                 "guardrail": "GUARDRAIL_INJECTION_MODEL"}
    if mode == "local":
        assert pvc, "no PersistentVolumeClaim comps-models"
    else:
        assert not pvc, "the remote backends still have the models PVC"
    for w in workloads(docs):
        ps = pod_spec(w)
        vols = {v["name"]: v for v in ps.get("volumes") or []}
        for c in containers(w):
            for m in c.get("volumeMounts") or []:
                v = vols.get(m["name"]) or {}
                if (v.get("persistentVolumeClaim") or {}).get("claimName") == "comps-models":
                    assert m.get("readOnly") is True and v["persistentVolumeClaim"].get("readOnly") is True, \
                        f"{wname(w)} mounts the models volume writable"
                    assert m["mountPath"] == "/models", f"{wname(w)} mounts the models at {m['mountPath']}"
        n = wname(w)
        if n not in model_env:
            continue
        env = resolved_env(containers(w)[0], docs)
        remote = {"embedding": "EMBEDDING_REMOTE_URL", "rerank": "RERANK_REMOTE_URL", "llm": "LLM_REMOTE_URL"}.get(n)
        if mode == "local" or n == "guardrail":
            path = env.get(model_env[n], "")
            assert path.startswith("/models/"), f"{n}: {model_env[n]} is {path!r}, not under /models"
            assert path.split("/")[2] in ctx["fetched_models"], \
                f"{n}: {path} is none of scripts/fetch-models.sh's models {sorted(ctx['fetched_models'])}"
            assert remote is None or remote not in env, f"{n}: local model and {remote} both set"
        else:
            assert model_env[n] not in env, f"{n}: a remote proxy still names a model ({model_env[n]})"
            assert re.match(r"https?://", env.get(remote, "")), f"{n}: {remote} is {env.get(remote)!r}"
            assert not any(m["mountPath"] == "/models" for m in containers(w)[0].get("volumeMounts") or []), \
                f"{n}: a remote proxy mounts /models"


def check_guardrail(name, docs, ctx):
    want = OVERLAYS[name]["guardrail"]
    g = find(docs, "Deployment", "guardrail")
    chatqna = find(docs, "Deployment", "chatqna")
    env = resolved_env(containers(chatqna)[0], docs)
    flag = env.get("CHATQNA_WITH_GUARDRAILS")
    assert bool(g) == want, f"guardrail Deployment {'missing' if want else 'present'}"
    assert flag == ("true" if want else "false"), f"CHATQNA_WITH_GUARDRAILS is {flag!r}"
    if want:
        svc = find(docs, "Service", env["GUARDRAIL_SERVICE_HOST_IP"])
        assert svc and svc["spec"]["ports"][0]["port"] == int(env["GUARDRAIL_SERVICE_PORT"]), \
            "chatqna's GUARDRAIL_SERVICE_HOST_IP/PORT is not the guardrail's Service"


def check_references(name, docs, ctx):
    cms = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in by_kind(docs, "Secret")}
    pvcs = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
    for w in workloads(docs):
        ps = pod_spec(w)
        vols = {v["name"] for v in ps.get("volumes") or []}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
        for v in ps.get("volumes") or []:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            assert claim is None or claim in pvcs, f"{wname(w)}: volume {v['name']} claims {claim}, which is not here"
            cm = (v.get("configMap") or {}).get("name")
            assert cm is None or cm in cms, f"{wname(w)}: volume {v['name']} names ConfigMap {cm}"
        for c in containers(w) + (ps.get("initContainers") or []):
            where = f"{wname(w)}/{c['name']}"
            for m in c.get("volumeMounts") or []:
                assert m["name"] in vols | claims, f"{where}: mounts {m['name']}, which is no volume"
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef:
                    assert ef["configMapRef"]["name"] in cms, f"{where}: envFrom ConfigMap {ef['configMapRef']['name']}"
                if "secretRef" in ef:
                    s = ef["secretRef"]["name"]
                    assert s in secrets or s in EXTERNAL_SECRETS, f"{where}: envFrom Secret {s}"
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    assert r["name"] in cms, f"{where}: {e['name']} from ConfigMap {r['name']}, which is not here"
                    assert r["key"] in (cms[r["name"]].get("data") or {}) or r.get("optional"), \
                        f"{where}: {e['name']} from key {r['key']}, which {r['name']} has not"
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    assert r["name"] in secrets or r["name"] in EXTERNAL_SECRETS, \
                        f"{where}: {e['name']} from Secret {r['name']}, which nothing makes or documents"
                    if r["name"] not in secrets and not r.get("optional"):
                        assert OVERLAYS[name]["retriever"] == "pgvector" and r["name"] == "comps-pgvector", \
                            f"{where}: needs Secret {r['name']} (only overlays/pgvector may need one)"
    for d in docs:
        assert d.get("kind") and d.get("apiVersion") and (d.get("metadata") or {}).get("name"), \
            f"a document without kind/apiVersion/name: {d}"


def check_services(name, docs, ctx):
    compose = ctx["compose"]
    pods = [(w, c) for w in workloads(docs) for c in containers(w)]
    for s in by_kind(docs, "Service"):
        sel = s["spec"].get("selector") or {}
        matched = [(w, c) for w, c in pods
                   if sel and all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        assert matched, f"Service {s['metadata']['name']} selects no pod"
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            for w, c in matched:
                ports = container_ports(c)
                assert tp in ports or tp in ports.values(), \
                    f"Service {s['metadata']['name']} targets port {tp}, which {wname(w)} has not"
    for w in workloads(docs):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(w["spec"]["selector"], labels), f"{wname(w)}: selector does not match its pods"
        c = containers(w)[0]
        n = wname(w)
        if n not in compose:
            continue
        svc = find(docs, "Service", n)
        assert svc, f"no Service named {n} (the host name chatqna and compose use)"
        port = http_port(c)
        assert compose[n]["ports"] == [port], f"{n}: container port {port}, compose's {compose[n]['ports']}"
        assert svc["spec"]["ports"][0]["port"] == port, f"Service {n} port {svc['spec']['ports'][0]['port']} != {port}"
        env = resolved_env(c, docs)
        port_env = "MEGA_SERVICE_PORT" if n == "chatqna" else "COMPS_PORT"
        assert env.get(port_env) == str(port), f"{n}: {port_env} is {env.get(port_env)!r}, its port {port}"
        ann = w["spec"]["template"]["metadata"].get("annotations") or {}
        assert ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(port) \
            and ann.get("prometheus.io/path") == "/metrics", f"{n}: prometheus.io annotations do not point at /metrics on {port}"


def check_compose_env(name, docs, ctx):
    """Commands, env names and values of every comps container against its compose service."""
    compose = ctx["compose"]
    for n in COMPS_SERVICES:
        w = find(docs, "Deployment", n) or find(docs, "StatefulSet", n)
        if w is None:
            continue
        c = containers(w)[0]
        assert c.get("command") == compose[n]["command"], f"{n}: command {c.get('command')}, compose's {compose[n]['command']}"
        env = resolved_env(c, docs)
        want = dict(compose[n]["env"])
        for k in MISSING_ENV.get(name, {}).get(n, set()):
            want.pop(k, None)
        want.update(CHANGED_ENV.get(name, {}).get(n, {}))
        missing = sorted(set(want) - set(env))
        assert not missing, f"{n}: compose's {missing} missing"
        extra = sorted(set(env) - set(compose[n]["env"]) - EXTRA_ENV["*"] - EXTRA_ENV.get(n, set()))
        assert not extra, f"{n}: {extra} are not compose's (nor known extras)"
        differ = {k: (env[k], v) for k, v in want.items() if env[k] != v}
        assert not differ, f"{n}: values differ from compose (ours, compose's): {differ}"
        if n == "chatqna":
            # Each backend host is the Service of that name, on its port.
            for host_var, port_var in (("EMBEDDING_SERVER_HOST_IP", "EMBEDDING_SERVER_PORT"),
                                       ("RETRIEVER_SERVICE_HOST_IP", "RETRIEVER_SERVICE_PORT"),
                                       ("RERANK_SERVER_HOST_IP", "RERANK_SERVER_PORT"),
                                       ("LLM_SERVER_HOST_IP", "LLM_SERVER_PORT")):
                svc = find(docs, "Service", env[host_var])
                assert svc, f"chatqna's {host_var} {env[host_var]} is no Service"
                assert str(svc["spec"]["ports"][0]["port"]) == env[port_var], f"chatqna's {port_var} is not {env[host_var]}'s port"


class Pod:
    def __init__(self, name, namespace, labels, ports):
        self.name, self.namespace, self.labels, self.ports = name, namespace, labels, ports


def peer_matches(peer, src, ns):
    ns_sel, pod_sel, ip = peer.get("namespaceSelector"), peer.get("podSelector"), peer.get("ipBlock")
    if ip is not None:
        return src.namespace is None
    if src.namespace is None:
        return False
    if ns_sel is None:
        ns_ok = src.namespace == ns
    else:
        ns_ok = selector_matches(ns_sel, {"kubernetes.io/metadata.name": src.namespace})
    return ns_ok and (pod_sel is None or selector_matches(pod_sel, src.labels))


def port_matches(rule_ports, dst, port_name):
    if not rule_ports:
        return True
    number = dst.ports[port_name]
    return any(p.get("port") in (None, port_name, number) and p.get("protocol", "TCP") == "TCP" for p in rule_ports)


def allowed(policies, src, dst, port_name, ns):
    selecting = [p for p in policies if "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                 and selector_matches(p["spec"]["podSelector"], dst.labels)]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress") or []:
            peers = rule.get("from")
            if (not peers or any(peer_matches(x, src, ns) for x in peers)) and port_matches(rule.get("ports"), dst, port_name):
                return True
    return False


def check_network_policies(name, docs, ctx):
    ns = OVERLAYS[name]["namespace"] or "default"
    policies = by_kind(docs, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and "Ingress" in p["spec"].get("policyTypes", [])
               and not p["spec"].get("ingress") for p in policies), "no default-deny ingress policy"
    pods = [Pod(wname(w), ns, w["spec"]["template"]["metadata"]["labels"],
                {k: v for c in containers(w) for k, v in container_ports(c).items()}) for w in workloads(docs)]
    names = {p.name for p in pods}
    outside = Pod("(a client outside the namespace)", "elsewhere", {}, {})
    internet = Pod("(an address outside the cluster)", None, {}, {})
    scraper = Pod("(Prometheus)", "monitoring", {SCRAPER_LABEL[0]: SCRAPER_LABEL[1]}, {})
    expected = set()
    for dst in pods:
        for port in dst.ports:
            if dst.name == "chatqna":
                expected |= {(s.name, dst.name, port) for s in pods + [outside, internet, scraper]}
            if port == "http":
                expected.add((scraper.name, dst.name, port))
    for caller, callees in CALLS.items():
        for callee in callees:
            if caller in names and callee in names:
                for port in next(p for p in pods if p.name == callee).ports:
                    expected.add((caller, callee, port))
    for src in pods + [outside, internet, scraper]:
        for dst in pods:
            for port in dst.ports:
                ok = allowed(policies, src, dst, port, ns)
                want = (src.name, dst.name, port) in expected
                assert ok == want, f"{src.name} -> {dst.name}:{port} is {'allowed' if ok else 'denied'}, " \
                                   f"should be {'allowed' if want else 'denied'}"
    # The same in the policies' own terms: only chatqna's rules admit sources outside the
    # namespace, apart from the scraper's (a pod selector that requires its label).
    for p in policies:
        targets = {d.name for d in pods if selector_matches(p["spec"]["podSelector"], d.labels)}
        for rule in p["spec"].get("ingress") or []:
            for peer in rule.get("from") or [{}]:
                external = not peer or "ipBlock" in peer or "namespaceSelector" in peer
                is_scraper = "namespaceSelector" in peer and \
                    (peer.get("podSelector") or {}).get("matchLabels", {}).get(SCRAPER_LABEL[0]) == SCRAPER_LABEL[1]
                assert not external or targets <= {"chatqna"} or is_scraper, \
                    f"NetworkPolicy {p['metadata']['name']} admits sources outside the namespace to {sorted(targets)}"


def check_hpa(name, docs, ctx):
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    targets = {}
    for h in hpas:
        assert h["apiVersion"] == "autoscaling/v2", f"HPA {h['metadata']['name']} is {h['apiVersion']}"
        ref = h["spec"]["scaleTargetRef"]
        d = find(docs, ref["kind"], ref["name"])
        assert ref["kind"] == "Deployment" and d, f"HPA {h['metadata']['name']} targets {ref['kind']}/{ref['name']}, no Deployment here"
        assert ref.get("apiVersion") == "apps/v1", f"HPA {h['metadata']['name']}: scaleTargetRef apiVersion {ref.get('apiVersion')}"
        assert "replicas" not in d["spec"], f"Deployment {ref['name']} sets replicas, which its HPA owns"
        assert 1 <= h["spec"].get("minReplicas", 1) <= h["spec"]["maxReplicas"], f"HPA {h['metadata']['name']}: min > max"
        for m in h["spec"]["metrics"]:
            if m["type"] == "Resource" and m["resource"]["target"]["type"] == "Utilization":
                r = m["resource"]["name"]
                assert all((c.get("resources") or {}).get("requests", {}).get(r) for c in containers(d)), \
                    f"HPA {h['metadata']['name']} on {r} utilisation, and {ref['name']} requests no {r}"
        targets[ref["name"]] = h
    for n in ("embedding", "rerank", "llm"):
        h = targets.get(n)
        assert h and any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in h["spec"]["metrics"]), \
            f"no CPU HPA for {n}"
    h = targets.get("chatqna")
    assert h, "no HPA for chatqna"
    pods_metrics = [m for m in h["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics and pods_metrics[0]["pods"]["metric"]["name"] == PENDING_METRIC \
        and pods_metrics[0]["pods"]["target"]["type"] == "AverageValue", f"chatqna's HPA is not on {PENDING_METRIC} per pod"
    assert PENDING_METRIC in ctx["adapter_metrics"], f"prometheus-adapter's rules serve {ctx['adapter_metrics']}, not {PENDING_METRIC}"
    assert ctx["metric_in_source"], f"{PENDING_METRIC} is not in comps-core's source any more"


def check_pdb(name, docs, ctx):
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for w in workloads(docs):
        if not any(is_comps(c) for c in containers(w)):
            continue
        labels = w["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in pdbs if selector_matches(p["spec"]["selector"], labels)]
        assert len(mine) == 1, f"{wname(w)}: {len(mine)} PodDisruptionBudgets"
        spec = mine[0]["spec"]
        if "minAvailable" in spec:
            replicas = w["spec"].get("replicas")
            hpa = [h for h in by_kind(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == wname(w)]
            floor = hpa[0]["spec"].get("minReplicas", 1) if hpa else (replicas or 1)
            assert int(spec["minAvailable"]) < floor, f"{wname(w)}: minAvailable {spec['minAvailable']} blocks every drain"
        else:
            assert int(spec.get("maxUnavailable", 0)) >= 1, f"{wname(w)}: maxUnavailable 0 blocks every drain"
    for p in pdbs:
        assert any(selector_matches(p["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
                   for w in workloads(docs)), f"PodDisruptionBudget {p['metadata']['name']} selects nothing"


def check_namespace_and_images(name, docs, ctx):
    ns = OVERLAYS[name]["namespace"]
    for d in docs:
        got = d["metadata"].get("namespace")
        if d["kind"] == "Namespace":
            continue
        assert got == ns, f"{d['kind']}/{d['metadata']['name']} in namespace {got!r}, not {ns!r}"
    if ns:
        assert find(docs, "Namespace", ns), f"no Namespace {ns}"
    images = {c["image"] for w in workloads(docs) for c in containers(w) if is_comps(c)}
    assert len(images) == 1, f"comps containers run several images: {images}"
    for w in workloads(docs):
        for c in containers(w):
            assert ":" in c["image"] and not c["image"].endswith(":"), f"{wname(w)}: image {c['image']} without a tag"
    if OVERLAYS[name]["retriever"] == "pgvector":
        pg = containers(find(docs, "StatefulSet", "pgvector"))[0]
        assert pg["image"] == "pgvector/pgvector:pg16", f"Postgres image {pg['image']}"


CHECKS = [
    ("probes and resources", check_probes_and_resources),
    ("security contexts", check_security),
    ("graceful shutdown", check_graceful_shutdown),
    ("retriever and its store", check_retriever),
    ("models", check_models),
    ("guardrail", check_guardrail),
    ("references resolve", check_references),
    ("services and ports vs compose", check_services),
    ("commands and env vs compose", check_compose_env),
    ("network policies", check_network_policies),
    ("autoscalers", check_hpa),
    ("disruption budgets", check_pdb),
    ("namespace and images", check_namespace_and_images),
]


# --- checks of the sources (not of a render) -------------------------------------------------------

def check_kustomizations_v2(root):
    """Every kustomization uses only fields kustomize v2 reads; `resources:` are files and
    `bases:` directories (v2 reads no directory in resources); no patch deletes a whole object
    (v2 leaves an empty document for it)."""
    kdir = os.path.join(root, "deploy", "kubernetes")
    found = 0
    for dirpath, _, files in os.walk(kdir):
        if "kustomization.yaml" not in files:
            continue
        found += 1
        path = os.path.join(dirpath, "kustomization.yaml")
        rel = os.path.relpath(path, root)
        with open(path) as f:
            k = yaml.safe_load(f)
        unknown = set(k) - V2_FIELDS
        assert not unknown, f"{rel}: {sorted(unknown)} are not kustomize v2 fields"
        for r in k.get("resources") or []:
            assert os.path.isfile(os.path.join(dirpath, r)), f"{rel}: resource {r} is not a file"
        for b in k.get("bases") or []:
            assert os.path.isdir(os.path.join(dirpath, b)), f"{rel}: base {b} is not a directory"
        for p in k.get("patchesStrategicMerge") or []:
            with open(os.path.join(dirpath, p)) as f:
                for d in yaml.safe_load_all(f):
                    assert not (d or {}).get("$patch"), f"{rel}: patch {p} deletes a whole object (v2 cannot)"
        for g in k.get("configMapGenerator") or []:
            assert set(g) <= {"name", "behavior", "literals", "files"}, f"{rel}: generator fields {sorted(g)}"
    assert found >= 9, f"only {found} kustomizations under deploy/kubernetes"


def check_adapter_and_scrape(root, ctx):
    """prometheus-adapter's rule and the scrape job give the HPA its metric with the labels the
    rule maps to pods."""
    adir = os.path.join(root, "deploy", "kubernetes", "prometheus-adapter")
    with open(os.path.join(adir, "rules.yaml")) as f:
        rules = yaml.safe_load(f)["rules"]
    for r in rules:
        assert PENDING_METRIC in r["seriesQuery"], f"rule on {r['seriesQuery']}"
        ov = r["resources"]["overrides"]
        assert ov["namespace"]["resource"] == "namespace" and ov["pod"]["resource"] == "pod", "rule maps no pod"
        assert "<<.Series>>" in r["metricsQuery"] and "<<.LabelMatchers>>" in r["metricsQuery"], "metricsQuery"
    with open(os.path.join(adir, "scrape-config.yaml")) as f:
        scrape = yaml.safe_load(f)
    relabels = [x for j in scrape["scrape_configs"] for x in j.get("relabel_configs") or []]
    labels = {x.get("target_label"): x.get("source_labels") for x in relabels}
    assert labels.get("namespace") == ["__meta_kubernetes_namespace"], "the scrape job sets no namespace label"
    assert labels.get("pod") == ["__meta_kubernetes_pod_name"], "the scrape job sets no pod label"
    assert any(j["kubernetes_sd_configs"][0]["role"] == "pod" for j in scrape["scrape_configs"]), "no pod discovery"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rendered", required=True, help="directory of <overlay>.yaml renders")
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    args = ap.parse_args()
    root = os.path.abspath(args.repo)

    ctx = {"compose": load_compose(os.path.join(root, "docker-compose.yaml"))}
    with open(os.path.join(root, "scripts", "fetch-models.sh")) as f:
        ctx["fetched_models"] = set(re.findall(r"^\s*\[([A-Za-z0-9._-]+)\]=fetch_", f.read(), re.M))
    with open(os.path.join(root, "deploy", "kubernetes", "prometheus-adapter", "rules.yaml")) as f:
        ctx["adapter_metrics"] = {r["name"].get("as") or r["name"]["matches"].strip("^$")
                                  for r in yaml.safe_load(f)["rules"]}
    with open(os.path.join(root, "comps-core", "src", "orchestrator", "mod.rs")) as f:
        ctx["metric_in_source"] = f'"{PENDING_METRIC}"' in f.read()

    passed = failed = 0

    def run(label, fn, *a):
        nonlocal passed, failed
        try:
            fn(*a)
        except AssertionError as e:
            failed += 1
            print(f"FAIL {label}: {e}")
        except (KeyError, TypeError, IndexError, AttributeError, StopIteration) as e:
            failed += 1
            print(f"FAIL {label}: the manifests are not shaped as expected ({type(e).__name__}: {e})")
        else:
            passed += 1
            print(f"ok   {label}")

    run("sources: kustomizations readable by kustomize v2", check_kustomizations_v2, root)
    run("sources: prometheus-adapter rule and scrape job", check_adapter_and_scrape, root, ctx)
    for name in OVERLAYS:
        path = os.path.join(args.rendered, f"{name}.yaml")
        if not os.path.exists(path):
            failed += 1
            print(f"FAIL {name}: no render {path}")
            continue
        docs = load_docs(path)
        for label, fn in CHECKS:
            run(f"{name}: {label}", fn, name, docs, ctx)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
