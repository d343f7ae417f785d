#!/bin/bash
# Time to accuracy on CIFAR-10 (60,000 JPEG files): our `train` command against the plain
# PyTorch script ../shared/bench/train_torch.py on the same folder, network and recipe (α, stem,
# epochs, warm-up, batch), ROUNDS interleaved rounds. Whole-command wall time of each; test
# top-1 from `evaluate` (ours; timed apart) and from the script's JSON line (it evaluates
# inside its wall time). Logs and results.jsonl in $OUT. Run from the repository root.
# Our compilation cache and decoded-folder cache start empty in $WORK: round 1 is a first run
# on a machine. KEEP=1 keeps the caches an earlier run left in $WORK: every round warm.
# SEEDS="1 2 3": one round per seed, both sides at that seed (default: ROUNDS rounds at seed 0).
# SIDES=ours or SIDES=torch runs one side only; OURS_FLAGS adds flags to our `train`;
# TORCH_SCRIPT replaces the PyTorch script (a variant of it: torch_variant.py).
set -eu
DATA=${DATA:?set DATA to the CIFAR-10 image folder (../shared/data/cifar10-jpeg unpacked)}
OUT=${OUT:-experiments/cifar10_time/raw/$(date -u +%Y%m%dT%H%M)}
WORK=${WORK:-/tmp/cifar10_time}  # workdirs and caches: outside the repository
ROUNDS=${ROUNDS:-2}
SEEDS=${SEEDS:-$(for r in $(seq 1 $ROUNDS); do echo 0; done)}
ALPHA=${ALPHA:-0.25}; STEM=${STEM:-1}; EPOCHS=${EPOCHS:-5}; WARMUP=${WARMUP:-1}; BATCH=${BATCH:-64}
SIDES=${SIDES:-ours torch}; OURS_FLAGS=${OURS_FLAGS:-}
TORCH_SCRIPT=${TORCH_SCRIPT:-../shared/bench/train_torch.py}
for side in $SIDES; do
  [[ $side == ours || $side == torch ]] || { echo "SIDES: 'ours' and/or 'torch', got '$side'" >&2; exit 2; }
done
PY=$PWD/.venv/bin/python
TORCH=${TORCH:-$HOME/venv-torch/bin/python}
mkdir -p $OUT; [ "${KEEP:-0}" = 1 ] || rm -rf $WORK; mkdir -p $WORK
export MOBILENET_JAX_DECODED_CACHE=$WORK/decoded  # empty too: round 1 decodes the folder
{ date -u; git log -1 --format='commit %H'; lscpu | grep -E 'Model name|CPU family|Model:'; } > $OUT/machine.txt
now() { date +%s.%N; }
ours() {  # round $1 at seed $2
  local r=$1 seed=$2 t0 t1 t2
  rm -rf $WORK/ours_r$r  # a fresh run, not a resumed one
  t0=$(now)
  $PY -m mobilenet_jax.train --image-folder $DATA --alpha $ALPHA --stem-stride $STEM \
    --epochs $EPOCHS --warmup-epochs $WARMUP --val-fraction 0 --batch-size $BATCH --seed $seed \
    --workdir $WORK/ours_r$r --compile-cache $WORK/jax_cache $OURS_FLAGS > $OUT/ours_r$r.log 2>&1
  t1=$(now)
  cp $WORK/ours_r$r/metrics.jsonl $OUT/ours_r${r}_metrics.jsonl  # per epoch: train_s, precise_bn_s
  $PY -m mobilenet_jax.evaluate --ckpt $WORK/ours_r$r \
    --compile-cache $WORK/jax_cache --json $OUT/ours_r${r}_eval.json > /dev/null 2>&1
  t2=$(now)
  $PY - "$r" "$t0" "$t1" "$t2" "$OUT" "$seed" "$OURS_FLAGS" <<'PYEOF' >> $OUT/results.jsonl
import json, sys
r, t0, t1, t2, out, seed, flags = sys.argv[1:]
ev = json.load(open(f"{out}/ours_r{r}_eval.json"))
print(json.dumps({"who": "ours", "round": int(r), "seed": int(seed), "flags": flags,
                  "train_wall_s": float(t1) - float(t0), "evaluate_wall_s": float(t2) - float(t1),
                  "top1": ev["top1"]}))
PYEOF
  tail -1 $OUT/results.jsonl
}
torch() {  # round $1 at seed $2
  local r=$1 seed=$2 t0 t1
  t0=$(now)
  OMP_NUM_THREADS=2 $TORCH $TORCH_SCRIPT $DATA --alpha $ALPHA --stem-stride $STEM \
    --epochs $EPOCHS --warmup $WARMUP --batch $BATCH --seed $seed > $OUT/torch_r$r.json 2> $OUT/torch_r$r.log
  t1=$(now)
  $PY -c "import json,sys; d=json.load(open(sys.argv[1])); d.update(who='torch', script=sys.argv[6], round=int(sys.argv[2]), seed=int(sys.argv[5]), command_wall_s=float(sys.argv[4])-float(sys.argv[3])); print(json.dumps(d))" \
    $OUT/torch_r$r.json $r $t0 $t1 $seed $(basename $TORCH_SCRIPT) >> $OUT/results.jsonl
  tail -1 $OUT/results.jsonl
}
r=0
for seed in $SEEDS; do
  r=$((r + 1))
  for side in $SIDES; do $side $r $seed; done
done
