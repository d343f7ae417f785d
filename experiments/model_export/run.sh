#!/usr/bin/env bash
# Every export format of one float model per width, against the checkpoint: the seed-0 float
# models of experiments/int8_qat (SEEDS=0 bash experiments/int8_qat/run.sh trains them), each
# exported with --format tflite,onnx,stablehlo --int8, and the int8 model of the same model
# after 5 epochs of --qat; the parity reports are copied here.
#   bash experiments/model_export/run.sh   (from the repository root, on a quiet machine:
#   the report times each model)
set -euo pipefail
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUNS=${RUNS:-runs/int8_qat}
OUT=experiments/model_export/results
for name in alpha0.25-stem1 alpha1.0-stem2; do
  run=$RUNS/$name-seed0/float
  for need in "$run" "$RUNS/$name-seed0/qat"; do
    [ -f "$need/done" ] || { echo "no $need: run SEEDS=0 bash experiments/int8_qat/run.sh" >&2; exit 2; }
  done
  mkdir -p "$OUT/$name"
  python -m mobilenet_jax.export --ckpt "$run" --out "$run/export-all" --int8 \
    --format tflite,onnx,stablehlo --data-dir "$DATA" --offline | tee "$OUT/$name/export.log"
  cp "$run/export-all/parity.json" "$run/export-all/metadata.json" "$OUT/$name/"
  qat=$RUNS/$name-seed0/qat
  mkdir -p "$OUT/$name/qat"
  python -m mobilenet_jax.export --ckpt "$qat" --out "$qat/export-all" --int8 \
    --data-dir "$DATA" --offline | tee "$OUT/$name/qat/export.log"
  cp "$qat/export-all/parity.json" "$OUT/$name/qat/"
done
