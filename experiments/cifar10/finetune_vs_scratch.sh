#!/bin/bash
# Does the shipped CIFAR-10 model help on other classes? The 6-class CIFAR-100 subset (all its
# 3,000 training images, then its 600 test images), α 0.25, stem 1, 5 epochs (1 of warm-up):
# from `--init-from pretrained:cifar10` (a new classifier) against the same run from scratch,
# SEEDS seeds each; the test top-1 of each in $OUT/results.jsonl.
# Run from the repository root.
set -eu
DATA=${DATA:-../shared/data/cifar100-6class-arrayrecord}
OUT=${OUT:-experiments/cifar10/finetune_vs_scratch}
WORK=${WORK:-/tmp/finetune_vs_scratch}  # workdirs: outside the repository
SEEDS=${SEEDS:-0 1 2}
PY=$PWD/.venv/bin/python
mkdir -p $OUT; rm -rf $WORK; mkdir -p $WORK
{ date -u; git log -1 --format='commit %H'; lscpu | grep -E 'Model name|CPU family|Model:'; } > $OUT/machine.txt
: > $OUT/results.jsonl
for seed in $SEEDS; do
  for start in scratch pretrained; do
    init=(); [ $start = pretrained ] && init=(--init-from pretrained:cifar10)
    $PY -m mobilenet_jax.train --data-dir $DATA --alpha 0.25 --stem-stride 1 --epochs 5 \
      --warmup-epochs 1 --val-fraction 0 --offline --seed $seed "${init[@]}" --workdir $WORK/${start}_s$seed --no-progress \
      > $WORK/${start}_s$seed.log 2>&1
    $PY -m mobilenet_jax.evaluate --ckpt $WORK/${start}_s$seed --json $WORK/e.json > /dev/null 2>&1
    $PY -c "import json, sys; e = json.load(open('$WORK/e.json'))
print(json.dumps({'start': '$start', 'seed': $seed, 'test_top1': e['top1'], 'examples': e['examples']}))" >> $OUT/results.jsonl
  done
done
cat $OUT/results.jsonl
