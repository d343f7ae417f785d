#!/usr/bin/env bash
# The subset at 6 epochs (the recipe's command, 6 instead of 30 epochs), seeds 0-4, trained
# with the running statistics only; then each final checkpoint read as saved and with the
# statistics recomputed exactly as `train --precise-bn-batches 20` does (final_checkpoint.py).
#   bash experiments/eval_statistics/short_subset.sh      (from the repository root)
set -euo pipefail
PY=${PY:-python}
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUNS=${RUNS:-runs/eval_statistics_subset6}
mkdir -p "$RUNS"
for seed in 0 1 2 3 4; do
  [ -e "$RUNS/s$seed/checkpoints/latest" ] && continue
  $PY -m mobilenet_jax.train --alpha 0.25 --stem-stride 1 --epochs 6 --val-fraction 0 \
    --precise-bn-batches 0 --seed "$seed" --data-dir "$DATA" --offline --no-progress \
    --workdir "$RUNS/s$seed" > "$RUNS/s$seed.log" 2>&1
done
$PY experiments/eval_statistics/final_checkpoint.py "$RUNS"/s? --batches 20
