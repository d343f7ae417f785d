#!/usr/bin/env bash
# The recipe's test reading as a distribution: final.sh's command (the defaults, all of the
# subset's training split, then its test split) for seeds 0-4, and the same with the earlier
# recipe's flags, one JSON line per run in $OUT (a rerun skips the runs already there).
#   bash experiments/recipe/seeds.sh          (from the repository root)
#   python experiments/recipe/seeds_summary.py experiments/recipe/results/seeds_<machine>.jsonl
set -euo pipefail
PY=${PY:-python}
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUNS=${RUNS:-runs/recipe_seeds}
OUT=${OUT:-experiments/recipe/results/seeds.jsonl}
SEEDS=${SEEDS:-0 1 2 3 4}
declare -A RECIPE=([default]="" [earlier]="--batch-size 128 --warmup-epochs 2 --label-smoothing 0 --ema-decay 0")
mkdir -p "$RUNS"
touch "$OUT"
for seed in $SEEDS; do
  for recipe in default earlier; do
    grep -q "\"recipe\": \"$recipe\", \"seed\": $seed," "$OUT" && continue
    run="$RUNS/${recipe}_s$seed"
    rm -rf "$run"
    start=$(date +%s)
    $PY -m mobilenet_jax.train --alpha 0.25 --stem-stride 1 --epochs 30 --val-fraction 0 \
      --seed "$seed" ${RECIPE[$recipe]} --data-dir "$DATA" --offline --no-progress \
      --workdir "$run" > "$run.log" 2>&1
    wall=$(( $(date +%s) - start ))
    $PY -m mobilenet_jax.evaluate --ckpt "$run" --json "$run.eval.json" > /dev/null
    $PY - "$recipe" "$seed" "$wall" "$run.eval.json" "${RECIPE[$recipe]}" >> "$OUT" <<'PY'
import json, platform, sys
recipe, seed, wall, path, flags = sys.argv[1:6]
r = json.load(open(path))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(json.dumps({"recipe": recipe, "seed": int(seed), "flags": flags, "test_top1": r["top1"],
                  "test_top5": r["top5"], "examples": r["examples"], "train_wall_s": int(wall),
                  "cpu": cpu}))
PY
    tail -1 "$OUT"
  done
done
