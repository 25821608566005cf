#!/usr/bin/env bash
# Load images from the local Docker into the cluster's containerd (nothing can be pulled here).
#
#   scripts/cluster/load-images.sh ghcr.io/bgeflow/bgeflow-ops:0.1.0 ghcr.io/bgeflow/bgeflow-gpu:0.1.0
#
# An image whose Docker ID was loaded before (a stamp in $STATE/images) is skipped, so a second run costs seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/cluster/lib.sh
source "$here/lib.sh"
ctr_() { ctr -a "$RUN/containerd.sock" -n k8s.io "$@"; }
[[ -S $RUN/containerd.sock ]] || die "the cluster's containerd is not running (scripts/cluster/up.sh)"
command -v docker >/dev/null || die "no docker client: the images come from the local Docker build"
for image in "$@"; do
  id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) \
    || die "image $image is not in the local Docker: build it first (make images)"
  stamp=$STATE/images/$(echo "$image" | tr '/:' '__').id
  if [[ -f $stamp && $(cat "$stamp") == "$id" ]] && ctr_ images ls -q | grep -qxF "$image"; then
    log "$image: loaded ($id)"
    continue
  fi
  log "$image: docker save | ctr import ($(docker image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
  started=$SECONDS
  docker save "$image" | ctr_ images import - >/dev/null
  echo "$id" >"$stamp"
  log "$image: imported in $((SECONDS - started))s"
done
