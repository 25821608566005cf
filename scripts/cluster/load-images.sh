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
  # A new build replaces the old one: drop the old copy (and e2e's derivative of it) first, so
  # its snapshot is collected before the new one is unpacked (the disk holds one, not two).
  if ctr_ images ls -q | grep -qxF "$image"; then
    ctr_ images rm --sync "$image" "$image-e2e" >/dev/null 2>&1 || true
  fi
  log "$image: docker save | ctr import ($(docker image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
  started=$SECONDS
  # docker save writes uncompressed layers, and containerd would keep each twice (blob and
  # unpacked snapshot): the layers go in gzipped, and once unpacked the blobs are dropped, as
  # containerd's discard_unpacked_layers does for pulls. The kubelet only needs the snapshots.
  docker save "$image" | python3 "$here/docker_to_oci.py" 2>"$RUN/import.layers" | ctr_ images import - >/dev/null
  for digest in $(tail -1 "$RUN/import.layers"); do ctr_ content rm "$digest" >/dev/null 2>&1 || true; done
  echo "$id" >"$stamp"
  log "$image: imported in $((SECONDS - started))s"
done
