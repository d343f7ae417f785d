#!/bin/bash
# The GPU measurements, as one command for a GPU machine with jax, flax, optax, orbax and
# chex and no TensorFlow (nothing here loads data). From the repository root:
#   bash experiments/gpu/measure.sh        # about 8 minutes at most
# (the benchmark and the bandwidth script stop at BENCH_LIMIT_S=330 and BW_LIMIT_S=150 s)
# Writes to $OUT (default experiments/gpu/results). What it measures: train (batch 128) and
# inference (batch 1024) images/s at alpha 0.1 and 1.0 for each kernel policy, the memory
# bandwidth the depthwise layers reach against a streaming copy
# (experiments/depthwise_cpu/depthwise_bandwidth.py), and the time of one CIFAR-100 epoch and
# of 200 epochs that the train step's images/s imply.
set -x
OUT=${OUT:-experiments/gpu/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv \
  | tee "$OUT/nvidia_smi.txt"
# `auto` is `reference` on a GPU, so it is not timed twice. Each step has a time limit, so
# that a slow one still leaves the others' results (the benchmark prints each row as it goes).
timeout ${BENCH_LIMIT_S:-330} $PY -m mobilenet_jax.benchmark --alphas ${ALPHAS:-0.1,1.0} \
  --mode both --kernels ${KERNELS:-reference,cpu} --json "$OUT/bench.json" 2>&1 \
  | tee "$OUT/bench.log"
# One CIFAR-100 epoch with the default validation split is 45,000 training images (train
# steps only: no evaluation, no host input).
[ -f "$OUT/bench.json" ] && $PY - "$OUT/bench.json" <<'PYEOF' | tee "$OUT/epoch_time.txt"
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    if r["mode"] == "train" and "img_per_s" in r:
        epoch = 45_000 / r["img_per_s"]
        print(f"alpha {r['alpha']} {r['kernels']} ({r['resolved']}), batch {r['batch']}: "
              f"{r['img_per_s']:,.0f} img/s, one epoch {epoch:.1f} s, 200 epochs "
              f"{200 * epoch / 60:.1f} min")
PYEOF
timeout ${BW_LIMIT_S:-150} $PY experiments/depthwise_cpu/depthwise_bandwidth.py \
  --alpha ${BW_ALPHA:-1.0} --batch-size 128 --json "$OUT/bandwidth.json" 2>&1 \
  | tee "$OUT/bandwidth.log"
date -u
