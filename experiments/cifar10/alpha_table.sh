#!/bin/bash
# The width table on CIFAR-10 (JPEG): the default recipe for EPOCHS epochs at each row of ROWS
# (name:alpha:stem:seed), 2 % of the training split held out for the curves; each row's
# metrics, config, `evaluate` report on the 10,000 test images (the run's and the folder's
# paths written as RUN and CIFAR10) and machine.txt (start, commit, CPU) in $OUT/<name>/, one
# line per row in $OUT/results.jsonl.
# Run from the repository root.
set -eu
DATA=${DATA:?set DATA to the CIFAR-10 image folder (../shared/data/cifar10-jpeg unpacked)}
OUT=${OUT:-experiments/cifar10/alpha_table}
WORK=${WORK:-/tmp/cifar10_alpha_table}  # workdirs: outside the repository
EPOCHS=${EPOCHS:-30}
ROWS=${ROWS:-a0.25_s0:0.25:1:0 a0.25_s1:0.25:1:1 a0.25_s2:0.25:1:2 a0.1_s0:0.1:1:0
             a0.25_stem2_s0:0.25:2:0 a0.5_s0:0.5:1:0 a1.0_s0:1.0:1:0}
PY=${PY:-$PWD/.venv/bin/python}
mkdir -p $OUT $WORK
now() { date +%s.%N; }
for row in $ROWS; do
  IFS=: read -r name alpha stem seed <<< "$row"
  [ -f $OUT/$name/test.json ] && continue  # done in an earlier call
  rm -rf $WORK/$name
  mkdir -p $OUT/$name
  { date -u; git log -1 --format='commit %H'; lscpu | grep -E 'Model name|CPU family|Model:'; } \
    > $OUT/$name/machine.txt
  t0=$(now)
  $PY -m mobilenet_jax.train --image-folder $DATA --alpha $alpha --stem-stride $stem \
    --seed $seed --epochs $EPOCHS --val-fraction 0.02 --workdir $WORK/$name --no-progress \
    > $WORK/$name.log 2>&1
  t1=$(now)
  $PY -m mobilenet_jax.evaluate --ckpt $WORK/$name --json $WORK/$name/test.json > /dev/null 2>&1
  for f in metrics.jsonl config.json test.json; do
    sed -e "s#$WORK/$name#RUN#g" -e "s#$DATA#CIFAR10#g" $WORK/$name/$f > $OUT/$name/$f
  done
  $PY - "$OUT/$name" "$name" "$alpha" "$stem" "$seed" "$t0" "$t1" <<'PYEOF' >> $OUT/results.jsonl
import json, statistics, sys
out, name, alpha, stem, seed, t0, t1 = sys.argv[1:]
test = json.load(open(f"{out}/test.json"))
epochs = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
print(json.dumps({"name": name, "alpha": float(alpha), "stem_stride": int(stem), "seed": int(seed),
                  "epochs": len(epochs), "test_top1": test["top1"], "test_top5": test["top5"],
                  "train_wall_s": round(float(t1) - float(t0), 1),
                  "median_epoch_s": statistics.median(e["train_s"] for e in epochs)}))
PYEOF
  tail -1 $OUT/results.jsonl
done
