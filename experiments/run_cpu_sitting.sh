#!/bin/bash
# One sitting: peers (as /work/shared/bench/README.md says) then ours, results in $OUT.
set -x
OUT=${OUT:-experiments/results}
mkdir -p $OUT
B=/work/shared/bench
date -u
export OMP_NUM_THREADS=2
~/venv-torch/bin/python $B/peak.py torch --out $OUT/peers.jsonl
~/venv-torch/bin/python $B/bench_torch.py --mode train --alphas 0.1,0.25,1.0 --variants eager+cl,compile+cl --out $OUT/peers.jsonl
~/venv-torch/bin/python $B/bench_torch.py --mode infer --alphas 0.1,1.0 --variants eager+cl,compile+cl --out $OUT/peers.jsonl
~/venv-tf/bin/python $B/bench_tf.py --mode train --alphas 0.1,0.25,1.0 --variants tffn,tob --out $OUT/peers.jsonl
~/venv-tf/bin/python $B/bench_tf.py --mode infer --alphas 0.1,1.0 --variants tffn --out $OUT/peers.jsonl
.venv/bin/python -m mobilenet_jax.benchmark --alphas 0.1,0.25,1.0 --mode train --depthwise auto,slices,vjp,xla --json $OUT/ours_train.json
.venv/bin/python -m mobilenet_jax.benchmark --alphas 0.1,0.25,1.0 --mode infer --depthwise auto,slices,vjp,xla --json $OUT/ours_infer.json
date -u
