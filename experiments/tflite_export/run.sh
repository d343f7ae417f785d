#!/usr/bin/env bash
# Train two models on the 6-class CIFAR-100 subset and export each to TFLite (float, int8);
# export prints and writes the parity report. Rerunning reuses finished runs. The recipe flags
# are those its results were measured with (the defaults before experiments/recipe/).
#   bash experiments/tflite_export/run.sh        (from the repository root)
set -euo pipefail
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUNS=${RUNS:-runs/tflite_export}
OUT=experiments/tflite_export/results
for spec in "0.25 1" "1.0 2"; do
  set -- $spec
  name=alpha$1-stem$2
  mkdir -p "$OUT/$name"
  python -m mobilenet_jax.train --alpha "$1" --stem-stride "$2" --epochs 30 --val-fraction 0 \
    --batch-size 128 --warmup-epochs 2 --label-smoothing 0 --ema-decay 0 \
    --data-dir "$DATA" --offline --no-progress --workdir "$RUNS/$name" | tail -n 3
  python -m mobilenet_jax.export --ckpt "$RUNS/$name" --out "$RUNS/$name/export" --int8 \
    --data-dir "$DATA" --offline | tee "$OUT/$name/export.log"
  cp "$RUNS/$name/export/parity.json" "$RUNS/$name/export/metadata.json" "$OUT/$name/"
  cp "$RUNS/$name/metrics.jsonl" "$OUT/$name/train_metrics.jsonl"
done
