# The cluster's add-ons, sourced by up.sh: the Kubeflow Training Operator, JobSet + Kubeflow
# Trainer v2 (controllers as Deployments in the cluster, as their releases install them), MinIO
# (a process on the node). Each controller's manifests (CRDs, RBAC, Deployment, webhook Service
# and configuration) are its release's own kustomize overlay, read from the Go module it is built
# from; a local overlay only swaps in the locally built image.
# shellcheck shell=bash

module_dir() { go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }

# A selector-less Service + Endpoints: "<name>.<ns>.svc" reaches a process on the node.
node_service() { # namespace name port targetPort
  kc apply -f - >/dev/null 2>&1 <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $1}
---
apiVersion: v1
kind: Service
metadata: {name: $2, namespace: $1}
spec:
  ports: [{name: main, port: $3, targetPort: $4, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: $2, namespace: $1}
subsets:
- addresses: [{ip: $NODE_IP}]
  ports: [{name: main, port: $4, protocol: TCP}]
EOF
}

# An image holding one static binary (the controllers are CGO_ENABLED=0 Go programs) at
# /manager, imported into the cluster's containerd.
binary_image() { # ref binary-path
  local ref=$1 bin=$2 tar
  tar=$STATE/images/$(echo "$ref" | tr '/:' '__').tar
  if [[ ! -f $tar || $bin -nt $tar ]]; then
    python3 "$here/oci_image.py" --ref "$ref" --out "$tar" --file "/manager=$bin" --dir /tmp \
      --entrypoint /manager --user 65532:65532 >/dev/null
    ctr_ images import "$tar" >/dev/null
  fi
  ctr_ images ls -q | grep -qxF "$ref" || ctr_ images import "$tar" >/dev/null
}

# A release's manifests/ from its module, copied next to the local overlay (kustomize refuses
# absolute paths, and the module cache is read-only).
copy_manifests() { # module-dir dest
  rm -rf "$2"
  cp -r --no-preserve=mode "$1" "$2"
}

# Render a kustomization (a release overlay plus local changes) and apply it server-side.
apply_overlay() { # dir-with-kustomization.yaml
  kc kustomize "$1" | kc apply --server-side --force-conflicts -f - >/dev/null
}

training_operator_up() {
  local src dir=$STATE/manifests/training-operator image=bgeflow.local/training-operator:$TRAINING_OPERATOR_VERSION
  src=$(module_dir github.com/kubeflow/training-operator "$TRAINING_OPERATOR_VERSION")
  binary_image "$image" "$CACHE/bin/training-operator-$TRAINING_OPERATOR_VERSION/training-operator.v1"
  mkdir -p "$dir"
  copy_manifests "$src/manifests" "$dir/upstream"
  # Worker pods get an init container that waits for the master's DNS name. The operator's
  # built-in one (alpine:3.10, no securityContext) is rejected in a namespace that enforces the
  # restricted Pod Security Standard, so the cluster runs it from a template that complies, in
  # the local busybox image. Clusters with restricted namespaces need the same operator setting
  # (the template file, /etc/config/initContainer.yaml by default).
  cat >"$dir/initContainer.yaml" <<'TEMPLATE'
- name: init-pytorch
  image: {{.InitContainerImage}}
  imagePullPolicy: IfNotPresent
  resources:
    limits: {cpu: 100m, memory: 20Mi}
    requests: {cpu: 50m, memory: 10Mi}
  securityContext:
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  # The master's Service name, made absolute with the pod's namespace domain (the first search
  # domain): busybox 1.35's nslookup exits 1 when any search-domain variant is NXDOMAIN, even
  # after it found the name (the release's alpine:3.10 busybox did not). No '<' or '>': the
  # operator renders this with html/template, which turns {{.MasterAddr}} after a '<' into
  # "ZgotmplZ".
  command: ['sh', '-c', 'd=$(cat /etc/resolv.conf | while read -r k v _; do [ "$k" = search ] && echo $v && break; done); err=1;for i in $(seq {{.MaxTries}}); do if nslookup {{.MasterAddr}}.$d.; then err=0 && break; fi;echo waiting for master; sleep 2; done; exit $err']
TEMPLATE
  # The release's standalone overlay (CRDs, RBAC, Deployment, webhook Service and configuration,
  # the Secret its cert rotator fills), with the local image and the template above.
  cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - upstream/overlays/standalone
images:
  - name: ghcr.io/kubeflow/training-v1/training-operator
    newName: ${image%:*}
    newTag: ${image##*:}
configMapGenerator:
  - name: training-operator-init-container
    namespace: kubeflow
    files: [initContainer.yaml]
patches:
  - target: {kind: Deployment, name: training-operator}
    patch: |-
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: init-container-template, configMap: {name: training-operator-init-container}}
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts/-
        value: {name: init-container-template, mountPath: /etc/config, readOnly: true}
      - op: add
        path: /spec/template/spec/containers/0/args
        value: [--pytorch-init-container-image=$BUSYBOX_IMAGE]
      - op: add
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: IfNotPresent
EOF
  apply_overlay "$dir"
  wait_for "crd/pytorchjobs.kubeflow.org" 60 kc wait --for condition=established crd/pytorchjobs.kubeflow.org --timeout=2s
  kc -n kubeflow rollout status deployment/training-operator --timeout=300s >/dev/null
  log "training-operator: deployment ready"
  wait_for "PyTorchJob webhook" 120 pytorchjob_webhook_answers
}

# A webhook is live when it refuses an object that passes the CRD's schema but breaks a rule
# only the webhook checks (and the refusal is its, not a connection error to it).
webhook_denies() { # object-yaml (stdin)
  local out
  out=$(kc create --dry-run=server -f - 2>&1) && return 1
  [[ $out == *"denied the request"* ]]
}
pytorchjob_webhook_answers() {
  # The operator's validator requires a container named "pytorch".
  webhook_denies <<'EOF'
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: webhook-probe, namespace: default}
spec:
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      template:
        spec:
          containers: [{name: not-pytorch, image: none}]
EOF
}

minio_up() {
  local env=$STATE/minio.env
  if [[ ! -f $env ]]; then
    printf 'MINIO_ROOT_USER=bgeflow\nMINIO_ROOT_PASSWORD=%s\n' "$(openssl rand -hex 16)" >"$env"
    chmod 600 "$env"
  fi
  set -a; source "$env"; set +a
  mkdir -p "$STATE/minio"
  MINIO_BROWSER=off start minio "$CACHE/bin/minio-$MINIO_VERSION/minio" server "$STATE/minio" \
    --address "$NODE_IP:9000" --console-address 127.0.0.1:9001 --quiet
  wait_for minio 120 in_ns curl -sf "http://$NODE_IP:9000/minio/health/ready"
  node_service minio minio 9000 9000
  # The bucket (PUT /<bucket>, SigV4-signed by curl); 409 = it exists.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD" -X PUT "http://$NODE_IP:9000/$MINIO_BUCKET")
  [[ $code == 200 || $code == 409 ]] || die "creating bucket $MINIO_BUCKET: HTTP $code"
  # The credentials as the chart expects them (s3.existingSecret); e2e copies it to its namespaces.
  kc -n minio create secret generic bgeflow-s3 --from-literal=AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD" --dry-run=client -o yaml | kc apply -f - >/dev/null
  log "minio: bucket s3://$MINIO_BUCKET at http://minio.minio:9000 (host: http://$NODE_IP:9000), Secret minio/bgeflow-s3"
}

jobset_up() {
  local src dir=$STATE/manifests/jobset image=bgeflow.local/jobset:$JOBSET_VERSION
  src=$(module_dir sigs.k8s.io/jobset "$JOBSET_VERSION")
  binary_image "$image" "$CACHE/bin/jobset-$JOBSET_VERSION/jobset"
  mkdir -p "$dir"
  copy_manifests "$src/config" "$dir/upstream"
  # JobSet's release manifests (config/default: namespace jobset-system, internal certificates).
  cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - upstream/default
images:
  - name: us-central1-docker.pkg.dev/k8s-staging-images/jobset/jobset
    newName: ${image%:*}
    newTag: ${image##*:}
EOF
  apply_overlay "$dir"
  kc -n jobset-system rollout status deployment/jobset-controller-manager --timeout=300s >/dev/null
  log "jobset: deployment ready"
}

trainer_up() {
  local src dir=$STATE/manifests/trainer image=bgeflow.local/trainer-controller-manager:$TRAINER_VERSION
  src=$(module_dir github.com/kubeflow/trainer/v2 "$TRAINER_VERSION")
  binary_image "$image" "$CACHE/bin/trainer-$TRAINER_VERSION/trainer-controller-manager"
  mkdir -p "$dir"
  copy_manifests "$src/manifests" "$dir/upstream"
  # The release's overlays/manager without its third-party/jobset (a GitHub release URL, which
  # cannot be fetched here): JobSet comes from jobset_up, built from its module.
  cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: kubeflow-system
resources:
  - upstream/overlays/manager/namespace.yaml
  - upstream/base/crds
  - upstream/base/manager
  - upstream/base/rbac
  - upstream/base/webhook
images:
  - name: ghcr.io/kubeflow/trainer/trainer-controller-manager
    newName: ${image%:*}
    newTag: ${image##*:}
secretGenerator:
  - name: kubeflow-trainer-webhook-cert
    namespace: kubeflow-system
    options:
      disableNameSuffixHash: true
EOF
  apply_overlay "$dir"
  kc -n kubeflow-system rollout status deployment/kubeflow-trainer-controller-manager --timeout=300s >/dev/null
  log "trainer: deployment ready"
  wait_for "TrainJob webhook" 120 trainjob_webhook_answers
}

trainjob_webhook_answers() {
  # The validator resolves spec.runtimeRef: a runtime that does not exist is refused.
  webhook_denies <<'EOF'
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainJob
metadata: {name: webhook-probe, namespace: default}
spec:
  runtimeRef: {name: no-such-runtime}
EOF
}

addons_up() {
  training_operator_up
  jobset_up
  trainer_up
  minio_up
}
