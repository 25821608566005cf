#!/usr/bin/env bash
# Run the fuzzer (tests/test_fuzz.py, profile "fuzz") seed after seed for MINUTES (default 10),
# then print how many inputs ran, under which seeds, and whether any failed. A failing seed is
# reproduced with: HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest tests/test_fuzz.py --hypothesis-seed=SEED
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MINUTES="${1:-10}"
SEED="${FUZZ_FIRST_SEED:-1}"
LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT
deadline=$(( $(date +%s) + MINUTES * 60 ))
started=$(date +%s)
seeds=() inputs=0 failing=0 status=0
while (( $(date +%s) < deadline )); do
    if ! HYPOTHESIS_PROFILE=fuzz "$ROOT/.venv/bin/pytest" -q -p no:cacheprovider "$ROOT/tests/test_fuzz.py" \
            --hypothesis-seed="$SEED" --hypothesis-show-statistics > "$LOG/$SEED.log" 2>&1; then
        status=1
        echo "seed $SEED FAILED:" >&2
        tail -40 "$LOG/$SEED.log" >&2
    fi
    passed=$(grep -Eo '[0-9]+ passing' "$LOG/$SEED.log" | awk '{s += $1} END {print s + 0}')
    failed=$(grep -Eo '[0-9]+ failing' "$LOG/$SEED.log" | awk '{s += $1} END {print s + 0}')
    inputs=$(( inputs + passed + failed )) failing=$(( failing + failed ))
    seeds+=("$SEED")
    echo "seed $SEED: $(( passed + failed )) inputs ($failed failing), $(( $(date +%s) - started ))s so far"
    SEED=$(( SEED + 1 ))
done
echo "fuzz: ${#seeds[@]} seed(s) [${seeds[*]}], $inputs inputs, $failing failing, $(( $(date +%s) - started ))s"
exit "$status"
