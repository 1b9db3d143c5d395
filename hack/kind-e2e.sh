#!/usr/bin/env bash
# Run the e2e suite against a kind cluster instead of the local control plane (needs Docker, kind,
# kubectl and helm on PATH). Nothing here runs in CI on the 2-core builders: it is the path for
# users with Docker. Steps: create the cluster, build both images, load them into kind, install
# the chart, run `pytest -m e2e` against the cluster through HYPERSEND_KUBECONFIG.
#
#   hack/kind-e2e.sh            # create (or reuse) cluster "hypersend", run everything
#   KEEP_CLUSTER=0 hack/kind-e2e.sh   # delete the cluster afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-hypersend}
# The names the chart and the examples use (tools/hypersend_devenv/images.py), tagged with the
# project version from pyproject.toml.
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)}
OPERATOR_REPOSITORY=ghcr.io/hypersend/operator
OPERATOR_IMAGE=$OPERATOR_REPOSITORY:$TAG
SERVER_IMAGE=ghcr.io/hypersend/chatserver:$TAG
KUBECONFIG_FILE=${KUBECONFIG_FILE:-$PWD/.hypersend/kind-$CLUSTER.kubeconfig}
PY=${PY:-.venv/bin/python}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done
mkdir -p "$(dirname "$KUBECONFIG_FILE")"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
export KUBECONFIG=$KUBECONFIG_FILE

docker build -f Dockerfile.operator -t "$OPERATOR_IMAGE" .
docker build -f Dockerfile.server -t "$SERVER_IMAGE" .
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$SERVER_IMAGE"

# The image must start and pass its liveness probe for --wait to succeed. It watches only its own
# namespace: the e2e suite runs its own operator process cluster-wide (tests/fixtures/operator.py),
# and two operators must never manage the same HypersendCluster.
helm upgrade --install hypersend-operator charts/hypersend-operator \
  --namespace hypersend-system --create-namespace \
  --set image.repository="$OPERATOR_REPOSITORY" --set image.tag="$TAG" \
  --set image.pullPolicy=Never --set 'watch.namespaces={hypersend-system}' \
  --wait --timeout 5m

status=0
HYPERSEND_KUBECONFIG=$KUBECONFIG_FILE \
HYPERSEND_OPERATOR_IMAGE=$OPERATOR_IMAGE \
HYPERSEND_SERVER_IMAGE=$SERVER_IMAGE \
  "$PY" -m pytest -m e2e "$@" || status=$?

if [[ ${KEEP_CLUSTER:-1} == 0 ]]; then
  kind delete cluster --name "$CLUSTER"
fi
exit "$status"
