#!/bin/bash
# One sitting: REPS rounds, each the peers (as /work/shared/bench/README.md says) and then
# ours, results in $OUT; `make_tables.py $OUT` turns them into the tables of cpu_benchmark.md.
# MODES="train infer" (the default) or one of them. Ours runs one process per alpha and mode,
# as a user's run would: the allocator is set per process from the size of its step
# (mobilenet_jax/hostmem.py).
set -x
OUT=${OUT:-experiments/results}
REPS=${REPS:-2}
MODES=${MODES:-train infer}
mkdir -p $OUT
B=/work/shared/bench
date -u
export OMP_NUM_THREADS=2
~/venv-torch/bin/python $B/peak.py torch --out $OUT/peers.jsonl
for rep in $(seq 1 $REPS); do
  export BENCH_REP=$rep
  impls=auto
  [ $rep = 1 ] && impls=auto,slices,vjp,xla  # every depthwise implementation once
  if [[ $MODES == *train* ]]; then
    ~/venv-torch/bin/python $B/bench_torch.py --mode train --alphas 0.1,0.25,1.0 --variants eager+cl,compile+cl --out $OUT/peers.jsonl
    ~/venv-tf/bin/python $B/bench_tf.py --mode train --alphas 0.1,0.25,1.0 --variants tffn,tob --out $OUT/peers.jsonl
    for a in 0.1 0.25 1.0; do
      .venv/bin/python -m mobilenet_jax.benchmark --alphas $a --mode train --depthwise $impls --json $OUT/ours_train_r${rep}_a$a.json
    done
  fi
  if [[ $MODES == *infer* ]]; then
    ~/venv-torch/bin/python $B/bench_torch.py --mode infer --alphas 0.1,1.0 --variants eager+cl,compile+cl --out $OUT/peers.jsonl
    ~/venv-tf/bin/python $B/bench_tf.py --mode infer --alphas 0.1,1.0 --variants tffn --out $OUT/peers.jsonl
    for a in 0.1 1.0; do
      .venv/bin/python -m mobilenet_jax.benchmark --alphas $a --mode infer --depthwise $impls --json $OUT/ours_infer_r${rep}_a$a.json
    done
  fi
  date -u
done
