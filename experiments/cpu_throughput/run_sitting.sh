#!/bin/bash
# One sitting: REPS rounds, each the peers (as ../shared/bench/README.md runs them) and then
# ours, results in $OUT; `make_tables.py $OUT` turns them into tables and
# `python ../shared/bench/check_peers.py $OUT/peers.jsonl` says whether the sitting counts.
# Run from the repository root. MODES="train infer" (the default) or one of them; ALPHAS_TRAIN,
# ALPHAS_INFER; KERNELS: ours' kernel policies in round 1 (later rounds: auto).
# ALLOC_PEERS=1 (the default) runs the peers a second time in every round with the allocator
# settings ours uses (GLIBC_TUNABLES, into $OUT/peers_alloc.jsonl); ALLOC_PEERS=0 skips that.
# BEFORE=DIR (another checkout, e.g. `git worktree add ../before <commit>`) times that code
# right before ours in every round, with BEFORE_FLAGS added to its flags (default: none).
# STEMS (default "1 2": the CIFAR stem and the paper's) and BATCHES (train, default "64 128")
# multiply the train cases; inference runs at stride 2, batch 1024.
# Ours runs one process per alpha, stem and mode, as a user's run would: the allocator is set
# per process from the size of its step (mobilenet_jax/process.py).
set -x
OUT=${OUT:?set OUT=experiments/cpu_throughput/sittings/<date>T<time>}
REPS=${REPS:-2}
MODES=${MODES:-train infer}
ALPHAS_TRAIN=${ALPHAS_TRAIN:-0.1 0.25 1.0}
ALPHAS_INFER=${ALPHAS_INFER:-0.1 1.0}
KERNELS=${KERNELS:-auto,cpu,reference}
STEMS=${STEMS:-1 2}
TF_PEERS=${TF_PEERS:-1}  # 0: PyTorch alone (no ~/venv-tf)
BATCHES=${BATCHES:-64 128}
ALLOC_PEERS=${ALLOC_PEERS:-1}
# What mobilenet_jax/process.py sets for every step (for steps past 64 MiB it adds one arena).
ALLOC=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
BEFORE_FLAGS=${BEFORE_FLAGS:-}
mkdir -p $OUT
B=../shared/bench
PY=$PWD/.venv/bin/python
date -u
git log -1 --format='commit %H' | cat
export OMP_NUM_THREADS=2
~/venv-torch/bin/python $B/peak.py torch --out $OUT/peers.jsonl
ours() {  # mode alpha round kernels stem
  local shape="--stem-stride $5 --batch-size ${BATCHES// /,}"
  [ $1 = infer ] && shape="--stem-stride $5"
  if [ -n "$BEFORE" ]; then
    (cd $BEFORE && PYTHONPATH=$PWD $PY -m mobilenet_jax.benchmark --alphas $2 --mode $1 $shape \
      $BEFORE_FLAGS --json $OLDPWD/$OUT/before_$1_s$5_r$3_a$2.json)
  fi
  $PY -m mobilenet_jax.benchmark --alphas $2 --mode $1 $shape --kernels $4 \
    --json $OUT/ours_$1_s$5_r$3_a$2.json
}
peers_into() {  # file mode alphas tf_variants [shape flags]
  ~/venv-torch/bin/python $B/bench_torch.py --mode $2 --alphas $3 --variants eager+cl,compile+cl ${@:5} --out $OUT/$1
  if [ "$TF_PEERS" = 1 ]; then
    ~/venv-tf/bin/python $B/bench_tf.py --mode $2 --alphas $3 --variants $4 ${@:5} --out $OUT/$1
  fi
}
peers() {  # mode alphas tf_variants [shape flags]: as their users run them, then (ALLOC_PEERS=1) with ours' allocator settings
  peers_into peers.jsonl "$@"
  if [ "$ALLOC_PEERS" = 1 ]; then GLIBC_TUNABLES=$ALLOC peers_into peers_alloc.jsonl "$@"; fi
}
for rep in $(seq 1 $REPS); do
  export BENCH_REP=$rep
  kernels=auto
  [ $rep = 1 ] && kernels=$KERNELS
  if [[ $MODES == *train* ]]; then
    for s in $STEMS; do
      for b in $BATCHES; do peers train ${ALPHAS_TRAIN// /,} tffn,tob --stem-stride $s --batch $b; done
      for a in $ALPHAS_TRAIN; do ours train $a $rep $kernels $s; done
    done
  fi
  if [[ $MODES == *infer* ]]; then
    peers infer ${ALPHAS_INFER// /,} tffn
    for a in $ALPHAS_INFER; do ours infer $a $rep $kernels 2; done
  fi
  date -u
done
python3 $B/check_peers.py $OUT/peers.jsonl
