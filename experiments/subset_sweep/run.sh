#!/usr/bin/env bash
# The α x stem-stride and resolution sweeps on the 6-class CIFAR-100 subset: 30 epochs, 2 seeds,
# 10 % of the training split held out for the curves only, the test split evaluated once.
# The recipe is the one all its runs used (the defaults before experiments/recipe/ changed them).
#   bash experiments/subset_sweep/run.sh        (from the repository root; one run at a time)
# ONLY=REGEX runs only the configurations whose names match; finished ones are never rerun.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUNS=${RUNS:-runs/subset_sweep}
OUT=experiments/subset_sweep/results
mkdir -p "$OUT"
one() {  # name, then train flags
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return; fi
  for seed in 0 1; do
    local dir="$RUNS/$name-seed$seed"
    if [ ! -f "$OUT/$name-seed$seed.json" ]; then
      local start=$(date +%s.%N)
      python -m mobilenet_jax.train "$@" --seed "$seed" --epochs 30 --val-fraction 0.1 \
        --batch-size 128 --warmup-epochs 2 --label-smoothing 0 --ema-decay 0 \
        --data-dir "$DATA" --offline --no-progress --workdir "$dir" > "$dir.log" 2>&1
      local wall=$(python -c "import time; print(round(time.time() - $start, 1))")
      python -m mobilenet_jax.evaluate --ckpt "$dir" --json "$OUT/$name-seed$seed.eval.json" > /dev/null
      python - "$dir" "$OUT/$name-seed$seed" "$wall" <<'PY'
import json, shutil, sys
run, out, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
result = json.load(open(out + ".eval.json"))
json.dump({"config": json.load(open(run + "/config.json")), "train_wall_s": wall,
           "test_top1": result["top1"], "test_examples": result["examples"]},
          open(out + ".json", "w"), indent=1)
shutil.copy(run + "/metrics.jsonl", out + ".metrics.jsonl")
PY
      rm "$OUT/$name-seed$seed.eval.json"
      echo "$name seed $seed: $(python -c "import json; r = json.load(open('$OUT/$name-seed$seed.json')); print(r['test_top1'], r['train_wall_s'], 's')")"
    fi
  done
}
mkdir -p "$RUNS"
for stem in 2 1; do
  for alpha in 0.1 0.25 0.5 1.0; do
    one "alpha$alpha-stem$stem-res32" --alpha "$alpha" --stem-stride "$stem"
  done
done
for res in 24 16; do
  one "alpha0.25-stem1-res$res" --alpha 0.25 --stem-stride 1 --resolution "$res"
done
python experiments/subset_sweep/make_table.py
