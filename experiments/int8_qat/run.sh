#!/usr/bin/env bash
# Does quantization-aware fine-tuning make a better int8 model than post-training quantization?
# For each width and seed: a float model (the TFLite export recipe), then from it 5 more
# epochs with --qat and, as the control, 5 more epochs without; each of the three exported
# with --int8 (calibrated on 500 training images, parity on all test images). Rerunning reuses
# finished runs and exports.
#   bash experiments/int8_qat/run.sh   (from the repository root)
#   then: python experiments/int8_qat/summarize.py
# LABEL_SMOOTHING=0.1 SPECS=1.0,2 bash experiments/int8_qat/run.sh: the same with label
# smoothing, into runs/int8_qat-ls0.1 and results-ls0.1/.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar100-6class-tfds}
LABEL_SMOOTHING=${LABEL_SMOOTHING:-0}
SUFFIX=$([ "$LABEL_SMOOTHING" = 0 ] || echo "-ls$LABEL_SMOOTHING")
RUNS=${RUNS:-runs/int8_qat$SUFFIX}
OUT=experiments/int8_qat/results$SUFFIX
SEEDS=${SEEDS:-"0 1 2"}
SPECS=${SPECS:-"0.25,1 1.0,2"}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-5}
COMMON="--batch-size 128 --label-smoothing $LABEL_SMOOTHING --ema-decay 0 --val-fraction 0
  --data-dir $DATA --offline --no-progress"

export_int8() {  # $1: run dir; $2: results dir
  if [ ! -f "$1/export/parity.json" ]; then
    python -m mobilenet_jax.export --ckpt "$1" --out "$1/export" --int8 --data-dir "$DATA" \
      --offline > "$1/export.log"
  fi
  mkdir -p "$2"
  cp "$1/export/parity.json" "$2/"
  cp "$1/metrics.jsonl" "$2/train_metrics.jsonl"
}

for spec in $SPECS; do
  IFS=, read -r alpha stem <<< "$spec"
  for seed in $SEEDS; do
    name=alpha$alpha-stem$stem-seed$seed
    base=$RUNS/$name/float
    [ -f "$base/done" ] || {
      python -m mobilenet_jax.train --alpha "$alpha" --stem-stride "$stem" --epochs 30 \
        --warmup-epochs 2 --seed "$seed" $COMMON --workdir "$base" | tail -n 1
      touch "$base/done"; }
    export_int8 "$base" "$OUT/$name/float"
    for variant in qat finetune; do
      run=$RUNS/$name/$variant
      flag=$([ "$variant" = qat ] && echo --qat || echo --no-qat)
      [ -f "$run/done" ] || {
        python -m mobilenet_jax.train --init-from "$base" $flag --epochs "$FINETUNE_EPOCHS" \
          --lr 0.01 --warmup-epochs 0 --seed "$seed" $COMMON --workdir "$run" | tail -n 1
        touch "$run/done"; }
      export_int8 "$run" "$OUT/$name/$variant"
    done
  done
done
