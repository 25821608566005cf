#!/usr/bin/env bash
# Build every Go binary the local cluster runs, from Go modules at the versions in versions.sh.
#
#   scripts/cluster/build.sh [component...]   # default: all (kubernetes coredns training-operator jobset trainer minio)
#
# Binaries land in $BGEFLOW_CLUSTER_CACHE/bin/<component>-<version>/ (default ~/.cache/bgeflow-cluster),
# the Go build cache in $BGEFLOW_CLUSTER_CACHE/go-build: both outside the repo, so a second run only
# checks the stamps (seconds) and a version bump rebuilds just that component. Builds run under
# `nice`, one `go build` per component (shared packages compile once), -p 2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/cluster/lib.sh
source "$here/lib.sh"

export GOCACHE="$CACHE/go-build"
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
mkdir -p "$CACHE/src" "$CACHE/bin" "$GOCACHE"

# A throwaway module that requires $main@$version and builds $packages from it into bin/$name-$version.
#   extra: more go.mod lines (replace/require) the module needs to resolve.
build_module() {
  local name=$1 version=$2 main=$3 packages=$4 extra=${5:-} ldflags=${6:-}
  local out="$CACHE/bin/$name-$version" src="$CACHE/src/$name-$version"
  if [[ -f "$out/.built" ]]; then
    log "$name $version: cached in $out"
    return
  fi
  log "$name $version: building $packages (this is the slow part on a cold cache)"
  mkdir -p "$src" "$out"
  # Required as a dependency, the main module's own replace directives do not apply, so every
  # module it replaces locally must be pinned here (extra).
  printf 'module bgeflow.local/cluster-build/%s\n\ngo 1.25.0\n\nrequire %s %s\n%s\n' \
    "$name" "$main" "$version" "$extra" >"$src/go.mod"
  local started=$SECONDS
  # -mod=mod: resolve the rest of the graph (and go.sum) from the module proxy on first use.
  (cd "$src" && nice -n 15 go build -mod=mod -p 2 -ldflags "-s -w $ldflags" -o "$out/" $packages)
  echo "$((SECONDS - started))" >"$out/.build-seconds"
  touch "$out/.built"
  log "$name $version: built in $((SECONDS - started))s"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION minor staging extra="" modfile
  staging=v0.${v#v1.}
  # Its go.mod lists the staging modules it replaces with ./staging/src/...: pin each to $staging.
  modfile=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  for mod in $(sed -n 's#^\s*\(k8s.io/[a-z-]*\) => ./staging/.*#\1#p' "$modfile"); do
    extra+="replace $mod => $mod $staging"$'\n'
  done
  minor=${v#v1.}; minor=${minor%%.*}
  # What `kubectl version` and helm's .Capabilities.KubeVersion read (hack/lib/version.sh sets the same).
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    ld+=" -X $pkg.buildDate=1970-01-01T00:00:00Z -X $pkg.gitCommit=module-$v"
  done
  build_module kubernetes "$v" k8s.io/kubernetes \
    "k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy" \
    "$extra" "$ld"
}

build_coredns() {
  build_module coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns
}

build_training_operator() {
  build_module training-operator "$TRAINING_OPERATOR_VERSION" github.com/kubeflow/training-operator \
    github.com/kubeflow/training-operator/cmd/training-operator.v1
}

build_jobset() {
  build_module jobset "$JOBSET_VERSION" sigs.k8s.io/jobset sigs.k8s.io/jobset
}

build_trainer() {
  build_module trainer "$TRAINER_VERSION" github.com/kubeflow/trainer/v2 \
    github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager
}

build_minio() {
  build_module minio "$MINIO_VERSION" github.com/minio/minio github.com/minio/minio
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(kubernetes coredns training-operator jobset trainer minio)
for c in "${components[@]}"; do
  "build_${c//-/_}"
done
