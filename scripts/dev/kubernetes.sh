#!/usr/bin/env bash
# The Kubernetes manifests (deploy/kubernetes/), checked without a cluster: the base and every
# overlay rendered with `kubectl kustomize`, every rendered document validated against the
# Kubernetes 1.30 API schemas (kubernetes-validate --strict: unknown fields are errors), then
# tests/kubernetes/manifests_test.py on what schemas cannot see (probes, resources, security
# contexts, NetworkPolicies evaluated, HPA targets and metric, env and ports against
# docker-compose.yaml, ...).
#
#   scripts/dev/kubernetes.sh
#   KUBECTL=/path/to/kubectl scripts/dev/kubernetes.sh     # another kubectl (its kustomize)
#
# kubectl: the one on PATH, else Debian's kubernetes-client installed with apt-get (kubectl
# 1.20, kustomize v2: the overlays are written to render with it and with v5 alike).
# kubernetes-validate from PyPI, pinned, in .venv-kubernetes/.
set -euo pipefail
cd "$(dirname "$0")/../.."

K8S_VERSION=1.30.0
KUBECTL="${KUBECTL:-kubectl}"
if ! command -v "$KUBECTL" >/dev/null 2>&1; then
  echo "installing kubernetes-client (kubectl) with apt-get"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  KUBECTL=kubectl
fi

VENV=.venv-kubernetes
. scripts/dev/venv.sh
pinned_venv "$VENV" "kubernetes-validate==1.37.0 PyYAML==6.0.4"

out="$(mktemp -d /tmp/comps-kubernetes.XXXXXX)"
trap 'rm -rf "$out"' EXIT

kversion="$("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
echo "kubectl: ${kversion:-unknown version}"

# Render: the base and each overlay, one file each, named as manifests_test.py expects.
targets=(base)
for d in deploy/kubernetes/overlays/*/; do
  targets+=("overlays/$(basename "$d")")
done
warnings=0
for t in "${targets[@]}"; do
  name="$(basename "$t")"
  if ! "$KUBECTL" kustomize "deploy/kubernetes/$t" >"$out/$name.yaml" 2>"$out/$name.err"; then
    echo "kustomize: FAILED to render deploy/kubernetes/$t:" >&2
    cat "$out/$name.err" >&2
    exit 1
  fi
  # kustomize v5 warns about the v2 fields we keep on purpose (bases, patchesStrategicMerge);
  # anything else it says is shown.
  w="$(grep -c "is deprecated. Please use" "$out/$name.err" || true)"
  warnings=$((warnings + w))
  grep -v "is deprecated. Please use" "$out/$name.err" >&2 || true
  echo "kustomize: deploy/kubernetes/$t -> $(grep -c '^kind:' "$out/$name.yaml") objects"
done
echo "kustomize: $warnings deprecation warnings (the kustomize v2 syntax bases / patchesStrategicMerge, kept on purpose)"

# Validate every document. kubernetes-validate only warns (exit 0) about a kind it has no
# schema for, so any line that is not a pass is a failure here, and every document must pass.
status=0
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" "$out"/*.yaml >"$out/validate.log" 2>&1 || status=$?
docs=0
for f in "$out"/*.yaml; do
  n="$("$VENV/bin/python" -c 'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$f")"
  docs=$((docs + n))
done
passed="$(grep -c '^INFO .* passed for resource' "$out/validate.log" || true)"
if [ "$status" -ne 0 ] || grep -qv '^INFO .* passed for resource' "$out/validate.log" || [ "$passed" -ne "$docs" ]; then
  grep -v '^INFO .* passed for resource' "$out/validate.log" | sed "s|$out/||g" >&2 || true
  echo "kubernetes-validate: FAILED ($passed of $docs documents passed against Kubernetes $K8S_VERSION, strict)" >&2
  exit 1
fi
kinds="$(sed -n 's/^INFO .* for resource \([a-z]*\)\/.*/\1/p' "$out/validate.log" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')"
echo "kubernetes-validate: all $docs documents of ${#targets[@]} renders pass against Kubernetes $K8S_VERSION (strict): $kinds"

"$VENV/bin/python" tests/kubernetes/manifests_test.py --rendered "$out"
