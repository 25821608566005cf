#!/usr/bin/env bash
# Scan the chart rendered in every scenario (defaults + helm/bgeflow/ci/*.yaml) with checkov,
# installed into its own venv (.tools/checkov-venv: its pins clash with the project's). checkov
# skips custom resources, so the pod templates inside PyTorchJobs (the chart's and the one
# bgeflow's launcher submits) are recast as Pods first (scripts/pod_templates.py).
# Exceptions live, with reasons, in helm/bgeflow/checkov.yaml. Exit non-zero on any finding.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.tools/checkov-venv"
[[ -x "$ROOT/.tools/bin/helm" ]] || bash "$ROOT/scripts/install-tools.sh" >/dev/null
if [[ ! -x "$VENV/bin/checkov" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check checkov
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
"$ROOT/.tools/bin/helm" template bgeflow "$ROOT/helm/bgeflow" -n bgeflow > "$OUT/default.yaml"
for values in "$ROOT"/helm/bgeflow/ci/*.yaml; do
    "$ROOT/.tools/bin/helm" template bgeflow "$ROOT/helm/bgeflow" -n bgeflow -f "$values" > "$OUT/$(basename "$values")"
done
PYTHONPATH="$ROOT" "$ROOT/.venv/bin/python" "$ROOT/scripts/pod_templates.py" "$OUT" --launcher
"$VENV/bin/checkov" -d "$OUT" --config-file "$ROOT/helm/bgeflow/checkov.yaml"
