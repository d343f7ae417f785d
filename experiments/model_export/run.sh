#!/usr/bin/env bash
# Every export format of one float model per width, against the checkpoint: the seed-0 float
# models of experiments/int8_qat (SEEDS=0 bash experiments/int8_qat/run.sh trains them), each
# exported with --format tflite,onnx,stablehlo --int8; the parity report is copied here.
#   bash experiments/model_export/run.sh   (from the repository root, on a quiet machine:
#   the report times each model)
set -euo pipefail
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
RUNS=${RUNS:-runs/int8_qat}
OUT=experiments/model_export/results
for name in alpha0.25-stem1 alpha1.0-stem2; do
  run=$RUNS/$name-seed0/float
  [ -f "$run/done" ] || { echo "no $run: run SEEDS=0 bash experiments/int8_qat/run.sh" >&2; exit 2; }
  mkdir -p "$OUT/$name"
  python -m mobilenet_jax.export --ckpt "$run" --out "$run/export-all" --int8 \
    --format tflite,onnx,stablehlo --data-dir "$DATA" --offline | tee "$OUT/$name/export.log"
  cp "$run/export-all/parity.json" "$run/export-all/metadata.json" "$OUT/$name/"
done
