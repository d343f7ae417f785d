#!/bin/bash
# One core against two: the train step (ours and PyTorch's, as a sitting runs them) and each
# layer (per_layer.py), on core 0 alone and on both cores, REPS interleaved rounds. Shows
# whether ours is behind per core or in what the second core adds. Results in $OUT:
# ours_<cores>_r<round>.json, steps_<cores>.jsonl (PyTorch), layers_<framework>_<cores>.jsonl;
# `python experiments/cpu_layers/cores_table.py $OUT` prints the tables. From the repo root.
set -eu
OUT=${OUT:?set OUT=experiments/cpu_layers/<name>}
REPS=${REPS:-2}
ALPHA=${ALPHA:-0.25}
STEM=${STEM:-1}
BATCH=${BATCH:-64}
B=../shared/bench
PY=$PWD/.venv/bin/python
TORCH=~/venv-torch/bin/python
mkdir -p $OUT
{ date -u; git log -1 --format='commit %H'; lscpu | grep -E 'Model name|CPU family|Model:'; } \
  > $OUT/machine.txt
cpus() { [ $1 = 1 ] && echo 0 || echo 0,1; }
for rep in $(seq 1 $REPS); do
  for cores in 1 2; do
    taskset -c $(cpus $cores) $PY -m mobilenet_jax.benchmark --alphas $ALPHA --stem-stride $STEM \
      --batch-size $BATCH --mode train --compile-cache off --json $OUT/ours_${cores}_r$rep.json \
      > /dev/null
    OMP_NUM_THREADS=$cores BENCH_REP=$rep taskset -c $(cpus $cores) $TORCH $B/bench_torch.py \
      --mode train --alphas $ALPHA --stem-stride $STEM --batch $BATCH --threads $cores \
      --variants eager+cl,compile+cl --out $OUT/steps_$cores.jsonl > /dev/null
    echo "$(date -u +%T) round $rep, $cores core(s): steps done"
  done
done
for cores in 1 2; do
  taskset -c $(cpus $cores) $PY experiments/cpu_layers/per_layer.py --alpha $ALPHA \
    --stem-stride $STEM --batch $BATCH --single-arena --out $OUT/layers_jax_$cores.jsonl \
    > /dev/null
  OMP_NUM_THREADS=$cores taskset -c $(cpus $cores) $TORCH experiments/cpu_layers/per_layer.py \
    --torch --alpha $ALPHA --stem-stride $STEM --batch $BATCH \
    --out $OUT/layers_torch_$cores.jsonl > /dev/null
  echo "$(date -u +%T) $cores core(s): layers done"
done
