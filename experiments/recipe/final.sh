#!/usr/bin/env bash
# The recipe's one test-set reading: the defaults, as `train` runs them with no recipe flag, on
# the 6-class CIFAR-100 subset, all of its training split (no validation), then the test split.
#   bash experiments/recipe/final.sh        (from the repository root)
set -euo pipefail
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUN=${RUN:-runs/recipe_final}
OUT=experiments/recipe/results
start=$(date +%s)
python -m mobilenet_jax.train --alpha 0.25 --stem-stride 1 --epochs 30 --val-fraction 0 \
  --data-dir "$DATA" --offline --no-progress --workdir "$RUN"
wall=$(( $(date +%s) - start ))
python -m mobilenet_jax.evaluate --ckpt "$RUN" --json "$OUT/final.eval.json"
python - "$RUN" "$OUT" "$wall" <<'PY'
import json, shutil, sys
run, out, wall = sys.argv[1], sys.argv[2], int(sys.argv[3])
result = json.load(open(f"{out}/final.eval.json"))
json.dump({"config": json.load(open(f"{run}/config.json")), "train_wall_s": wall,
           "test_top1": result["top1"], "test_top5": result["top5"],
           "test_examples": result["examples"]}, open(f"{out}/final.json", "w"), indent=1)
shutil.copy(f"{run}/metrics.jsonl", f"{out}/final.metrics.jsonl")
PY
rm "$OUT/final.eval.json"
