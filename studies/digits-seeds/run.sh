#!/usr/bin/env bash
# The digits seeds study (issue 13): do the paper's orderings hold on the offline smoke setting, and how
# sure are we? Evaluates 5 training seeds x the four table models, writes the report, and copies its
# small tables here. Rerunning continues where it stopped (finished result files are skipped).
#
# The models are trained beforehand (never written by this script):
#   mm-robust train --preset smoke --method all --seeds 0,1,2,3,4 --out "$CHECKPOINTS"
# (the study's checkpoints were trained one model at a time with --seed N --run-name <name>-sN, the same folders).
#
# Settings (environment; relative paths are taken from the repository root):
#   CHECKPOINTS   trained models (default checkpoints-study; only read)
#   RESULTS       attack/deform results and the report (default results-study)
#   N_ATTACK      test images attacked per model (default 357: all of them, as deform)
#   PGD_STEPS     unbounded-PGD iterations (default 200, the paper's Appendix D)
#   PYTHON        the interpreter with mm-robust's dependencies (default: python)
#   COPY_TO       where the small tables go (default: this folder)
#   STAGES        evaluations to run before the report (default "deform attack"; "" = report only)
#   SETS          deformation sets (default all; "table3" for the paper's 7-set excerpt)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
export PYTHONPATH=$PWD
CHECKPOINTS=${CHECKPOINTS:-checkpoints-study}
CHECKPOINTS_GIVEN=$CHECKPOINTS
RESULTS=${RESULTS:-results-study}
N_ATTACK=${N_ATTACK:-357}
PGD_STEPS=${PGD_STEPS:-200}
PYTHON=${PYTHON:-python}
COPY_TO=${COPY_TO:-$HERE}
STAGES=${STAGES-deform attack}
SETS=${SETS:-all}
run() { echo "== $(date -u +%T) $*" >&2; nice -n 10 "$PYTHON" -m robustbench_mm "$@"; }

# Only complete training runs are evaluated: a folder of links to them, rebuilt on every run, so a
# rerun after more seeds finish picks those up (and a model still training is never attacked).
COMPLETE="$RESULTS/complete-checkpoints"
rm -rf "$COMPLETE" && mkdir -p "$COMPLETE"
for run_dir in "$CHECKPOINTS"/*/; do
  if "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["complete"] else 1)' \
      "$run_dir/meta.json" 2>/dev/null; then
    ln -s "$(cd "$run_dir" && pwd)" "$COMPLETE/$(basename "$run_dir")"
  fi
done
echo "== $(ls "$COMPLETE" | wc -l) complete runs in $CHECKPOINTS" >&2
CHECKPOINTS=$COMPLETE

# Deformations first: the 51 Table 7 orderings rest on them, and they are the cheaper stage.
if [[ " $STAGES " == *" deform "* ]]; then
  run deform --checkpoints "$CHECKPOINTS" --out "$RESULTS/attacks" --sets "$SETS" --device cpu --quiet
fi
if [[ " $STAGES " == *" attack "* ]]; then
  run attack --checkpoints "$CHECKPOINTS" --out "$RESULTS/attacks" --n-examples "$N_ATTACK" \
      --pgd-steps "$PGD_STEPS" --device cpu --quiet
fi
run report --checkpoints "$CHECKPOINTS" --attacks "$RESULTS/attacks" --reports "$RESULTS/reports"

# The small tables and two figures; the checkpoints and raw result files stay out of git.
for table in table5 table3 table7 orderings; do
  cp "$RESULTS/reports/$table.md" "$RESULTS/reports/$table.csv" "$COPY_TO/"
done
for figure in orderings-digits.png fgsm-eps-sweep-digits.png; do
  if [ -f "$RESULTS/reports/$figure" ]; then cp "$RESULTS/reports/$figure" "$COPY_TO/"; fi
done
cat > "$COPY_TO/settings.txt" <<SETTINGS
checkpoints: the complete runs of ${CHECKPOINTS_GIVEN}: $(ls "$CHECKPOINTS" | tr '\n' ' ')
stages: $STAGES
attack: --n-examples $N_ATTACK --pgd-steps $PGD_STEPS (other settings: mm-robust attack defaults)
deform: --sets $SETS, all 357 digits test images (mm-robust deform defaults otherwise)
commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty)
finished: $(date -u +%Y-%m-%dT%H:%MZ)
SETTINGS
echo "== $(date -u +%T) done: $COPY_TO" >&2
