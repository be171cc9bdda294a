#!/usr/bin/env bash
# The kind e2e run, step by step. `make e2e` runs `k8s/e2e.sh all`; .github/workflows/e2e.yml
# runs the same steps one at a time (each with its own log and timeout), so the two cannot
# drift. Versions: k8s/versions.env; tools: k8s/tools.sh. Needs Docker, curl and the test
# tools of `pip install -e '.[dev]'` (E2E_PYTEST names their pytest, default: the one in PATH).
#
#   k8s/e2e.sh STEP...  runs the steps in the order given:
#     cluster       the kind cluster "flashsale": k8s/kind-config.yaml, the pinned node image;
#                   kindnet enforces NetworkPolicies
#     image         docker build, then kind load docker-image
#     addons        Traefik (the ingress, on localhost:8080) and KEDA, pinned chart versions
#     install       the chart with k8s/values-kind.yaml and the image just built
#     helm-test     helm test
#     suite         E2E_TARGET=kind pytest e2e (network policies included)
#     upgrade       helm upgrade of the running release with one setting changed, so that its
#                   pods roll (--wait), then helm test again
#     ct-install    chart-testing: the chart installed and helm-tested once per installable
#                   ci/*-values.yaml, each in a fresh namespace
#     diagnostics DIR   objects, events, pod logs and kind's node logs into DIR; never fails
#     delete        delete the cluster
#     all           cluster to ct-install; then diagnostics on failure, and delete the cluster
#                   unless KEEP_CLUSTER=1
#
# Every step uses a kubeconfig of its own ($E2E_HOME/kubeconfig, E2E_HOME defaulting to
# ~/.cache/flashsale-e2e), never your current context; to look at a kept cluster:
#   export KUBECONFIG=~/.cache/flashsale-e2e/kubeconfig
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=k8s/versions.env
source "$ROOT/k8s/versions.env"

CLUSTER=flashsale
NAMESPACE=flashsale
RELEASE=flashsale
IMAGE=flashsale
E2E_HOME=${E2E_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/flashsale-e2e}
E2E_PYTEST=${E2E_PYTEST:-pytest}
# ci/ values files ct install leaves out: they name servers and Secrets that exist only in the
# clusters they describe (a managed Redis and PostgreSQL, a database Secret made beforehand).
CT_INSTALL_SKIP=(external-services-values.yaml production-like-values.yaml)

log() { echo "==> $*" >&2; }
die() {
  echo "k8s/e2e.sh: $*" >&2
  exit 1
}

mkdir -p "$E2E_HOME"
export KUBECONFIG=$E2E_HOME/kubeconfig
PATH=$("$ROOT/k8s/tools.sh" install):$PATH

cluster() {
  if kind get clusters | grep -qx "$CLUSTER"; then
    # A kept cluster is reused only if it runs the pinned node image.
    local running
    running=$(docker inspect --format '{{.Config.Image}}' "$CLUSTER-control-plane")
    [[ $running == "$KIND_NODE_IMAGE" ]] ||
      die "kind cluster $CLUSTER runs $running, not $KIND_NODE_IMAGE: kind delete cluster --name $CLUSTER"
    log "reusing kind cluster $CLUSTER"
    kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
  else
    log "kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
    kind create cluster --name "$CLUSTER" --config "$ROOT/k8s/kind-config.yaml" \
      --image "$KIND_NODE_IMAGE" --kubeconfig "$KUBECONFIG" --wait 3m
  fi
  kubectl wait --for=condition=Ready nodes --all --timeout=3m
  # kindnet is the CNI and, with it, what enforces NetworkPolicies.
  kubectl --namespace kube-system rollout status daemonset/kindnet --timeout=3m
}

# The tag of the image built last: e2e-<its ID>, so that a rebuild is a new tag and installing
# it again on a kept cluster rolls the pods onto it.
image_tag() {
  local id
  id=$(docker image inspect --format '{{.Id}}' "$IMAGE:e2e")
  id=${id#sha256:}
  echo "e2e-${id:0:12}"
}

image() {
  log "building $IMAGE:e2e"
  # One platform and no attestation manifests: kind load docker-image then imports the image
  # even from Docker's containerd image store (kind #3795).
  docker build --provenance=false \
    --build-arg "REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --tag "$IMAGE:e2e" "$ROOT"
  local tag
  tag=$(image_tag)
  docker tag "$IMAGE:e2e" "$IMAGE:$tag"
  kind load docker-image "$IMAGE:$tag" --name "$CLUSTER"
}

addons() {
  log "Traefik $TRAEFIK_CHART_VERSION, KEDA $KEDA_CHART_VERSION"
  # --repo rather than `helm repo add`: nothing is written into your helm repositories.
  helm upgrade --install traefik traefik --repo https://traefik.github.io/charts \
    --version "$TRAEFIK_CHART_VERSION" --namespace traefik --create-namespace \
    --values "$ROOT/k8s/traefik-values.yaml" --wait --timeout 5m
  helm upgrade --install keda keda --repo https://kedacore.github.io/charts \
    --version "$KEDA_CHART_VERSION" --namespace keda --create-namespace \
    --values "$ROOT/k8s/keda-values.yaml" --wait --timeout 5m
}

# helm upgrade --install of the release with the kind values, the built image and any extra
# arguments.
release() {
  helm upgrade --install "$RELEASE" "$ROOT/charts/flashsale" --namespace "$NAMESPACE" \
    --create-namespace --values "$ROOT/k8s/values-kind.yaml" \
    --set "image.repository=$IMAGE" --set "image.tag=$(image_tag)" --wait --timeout 10m "$@"
}

install_release() {
  log "installing $RELEASE"
  release
}

helm_test() {
  helm test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout 5m
}

suite() {
  log "e2e suite"
  cd "$ROOT"
  E2E_TARGET=kind E2E_NAMESPACE=$NAMESPACE E2E_BASE_URL=http://localhost:8080 \
    "$E2E_PYTEST" e2e -p no:cacheprovider
}

api_pod_template() {
  kubectl --namespace "$NAMESPACE" get deployment "$RELEASE-api" \
    --output jsonpath='{.spec.template.metadata.annotations}'
}

upgrade() {
  local before
  before=$(api_pod_template)
  log "helm upgrade $RELEASE with config.logLevel=WARNING"
  # A changed setting changes the ConfigMap; its checksum on the pod templates must roll the
  # pods, and --wait waits for the new ones (and the pre-upgrade migration) to be ready.
  release --set config.logLevel=WARNING
  [[ $(api_pod_template) != "$before" ]] ||
    die "the upgrade changed the configuration but not the API's pod template: no pod rolled"
  # The suite leaves the demo product sold out; helm test's demo buys some.
  kubectl --namespace "$NAMESPACE" exec "deployment/$RELEASE-api" --container api -- \
    flashsale seed --stock 100
  helm_test
}

ct_install() {
  local work skip
  work=$(mktemp -d)
  cp -R "$ROOT/charts/flashsale" "$work/"
  for skip in "${CT_INSTALL_SKIP[@]}"; do
    rm "$work/flashsale/ci/$skip"
  done
  log "ct install with $(cd "$work/flashsale/ci" && echo *)"
  ct install --config "$ROOT/.github/ct.yaml" --charts "$work/flashsale" \
    --helm-extra-set-args "--set=image.repository=$IMAGE --set=image.tag=$(image_tag)"
  rm -rf "$work"
}

diagnostics() {
  local dir=$1 ns pod
  # Collect whatever can be collected: a broken cluster is why this runs.
  set +e
  mkdir -p "$dir/logs"
  log "diagnostics into $dir"
  kubectl get nodes --output wide >"$dir/nodes.txt" 2>&1
  kubectl get all,ingress,networkpolicies,pvc,jobs --all-namespaces --output wide >"$dir/objects.txt" 2>&1
  # Separate calls: KEDA's CRDs may not be there, and one unknown kind fails the whole get.
  kubectl get scaledobjects,hpa --all-namespaces --output wide >"$dir/autoscaling.txt" 2>&1
  kubectl get events --all-namespaces --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1
  kubectl describe pods --all-namespaces >"$dir/pods.txt" 2>&1
  helm list --all-namespaces --all >"$dir/helm-releases.txt" 2>&1
  helm history "$RELEASE" --namespace "$NAMESPACE" >>"$dir/helm-releases.txt" 2>&1
  kubectl get pods --all-namespaces --no-headers \
    --output custom-columns=NS:.metadata.namespace,NAME:.metadata.name 2>/dev/null |
    while read -r ns pod; do
      mkdir -p "$dir/logs/$ns"
      kubectl logs --namespace "$ns" "$pod" --all-containers --prefix --timestamps \
        >"$dir/logs/$ns/$pod.log" 2>&1
      kubectl logs --namespace "$ns" "$pod" --all-containers --prefix --timestamps --previous \
        >"$dir/logs/$ns/$pod.previous.log" 2>/dev/null || rm -f "$dir/logs/$ns/$pod.previous.log"
    done
  kind export logs "$dir/kind" --name "$CLUSTER" >/dev/null 2>&1
  # The overview in the log itself; the rest is in the directory (an artifact on GitHub).
  cat "$dir/objects.txt" "$dir/autoscaling.txt"
  tail -n 80 "$dir/events.txt"
  return 0
}

delete() {
  log "deleting kind cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
}

finish() {
  local status=$1
  if ((status != 0)); then
    diagnostics "$E2E_HOME/diagnostics"
  fi
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    log "kept kind cluster $CLUSTER: export KUBECONFIG=$KUBECONFIG"
  else
    delete
  fi
  exit "$status"
}

all() {
  trap 'finish $?' EXIT
  cluster
  image
  addons
  install_release
  helm_test
  suite
  upgrade
  ct_install
}

(($#)) || die "usage: k8s/e2e.sh STEP... (see the top of k8s/e2e.sh)"
while (($#)); do
  case $1 in
    cluster | image | addons | suite | upgrade | delete | all) "$1" ;;
    install) install_release ;;
    helm-test) helm_test ;;
    ct-install) ct_install ;;
    diagnostics)
      (($# > 1)) || die "diagnostics needs a directory"
      diagnostics "$2"
      shift
      ;;
    *) die "no step $1 (see the top of k8s/e2e.sh)" ;;
  esac
  shift
done
