#!/bin/bash
# The GPU record in one command, at most about 9 minutes, results written as it goes:
#   bash experiments/gpu/prepare.sh   # here, once: the subset as an image folder, wheels
#   bash experiments/gpu/run.sh       # there, from the repository root (Python with jax,
#                                     # flax, optax, orbax, chex; no TensorFlow needed)
#   SMOKE=1 DATA=<image folder> bash experiments/gpu/run.sh   # tiny, on a CPU (the tests)
# In order of value, each part under its own time limit:
#  a. the train step: alpha 1.0 and 0.25 x float32/bfloat16 x batch 512/128/1024 x kernels
#     reference/cpu. XLA takes about a minute to compile each on a GPU, so first one process
#     per (alpha, dtype, batch) compiles its rows into a shared compilation cache, in parallel
#     (with inference's steps and train's), then one process times every row, loading them.
#  b. a real `train` (alpha 1.0, 30 epochs, batch 512, validation and checkpoints every epoch)
#     on the 6-class CIFAR-100 subset as an image folder, each output line timestamped; then
#     `evaluate` on its test split.
#  c. inference at batch 1024, and the training loop's overhead over the bare step.
# Writes to $OUT (default experiments/gpu/results/run_<date>): run.log (everything), grid.json,
# train.log with the run's metrics.jsonl and config.json, eval.json, infer.json, loop.json,
# summary.txt.
set -u
OUT=${OUT:-experiments/gpu/results/run_$(date -u +%F)}
PY=${PY:-python3}
DATA=${DATA:-runs/gpu_data/cifar100-6class}
CACHE=${CACHE:-/tmp/mobilenet_jax_compile_cache}
WORK=${WORK:-/tmp/mobilenet_jax_gpu_run}
if [ "${SMOKE:-0}" = 1 ]; then
  ALPHAS=0.05 DTYPES=float32 BATCHES=8 KERNELS=reference MIN_TIME=0.05 BENCH_SMOKE=--smoke
  TRAIN_ALPHA=0.05 TRAIN_EPOCHS=3 TRAIN_BATCH=8 INFER_BATCH=16 LOOP_BATCHES=8
  : "${COMPILE_S:=120}" "${GRID_S:=120}" "${TRAIN_S:=120}" "${EVAL_S:=60}" "${INFER_S:=60}"
else
  ALPHAS=1.0,0.25 DTYPES=float32,bfloat16 BATCHES=512,128,1024 KERNELS=reference,cpu
  MIN_TIME=1.5 BENCH_SMOKE= TRAIN_ALPHA=1.0 TRAIN_EPOCHS=30 TRAIN_BATCH=512 INFER_BATCH=1024
  LOOP_BATCHES=128,512
  : "${COMPILE_S:=160}" "${GRID_S:=130}" "${TRAIN_S:=130}" "${EVAL_S:=30}" "${INFER_S:=40}"
fi
mkdir -p "$OUT" "$WORK"
rm -rf "$WORK"/*
exec > >(tee "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # packages the machine lacks, carried as wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl && export PYTHONPATH="$WORK/site:${PYTHONPATH:-}"
fi
echo "# $(date -u) $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv \
  2>/dev/null || echo "# no nvidia-smi"
BENCH="$PY -m mobilenet_jax.benchmark --compile-cache $CACHE --kernels $KERNELS --no-pipeline \
  $BENCH_SMOKE"
TRAIN_FLAGS="--image-folder $DATA --alpha $TRAIN_ALPHA --epochs $TRAIN_EPOCHS \
  --batch-size $TRAIN_BATCH --no-progress --compile-cache $CACHE"

echo "## a. compiling in parallel (limit ${COMPILE_S} s)"
start=$SECONDS
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the compiling processes share the GPU's memory
pids=()
for alpha in ${ALPHAS//,/ }; do
  for dtype in ${DTYPES//,/ }; do
    for batch in ${BATCHES//,/ }; do
      timeout "$COMPILE_S" $BENCH --mode train --alphas "$alpha" --dtype "$dtype" \
        --batch-size "$batch" --compile-only > "$WORK/compile_${alpha}_${dtype}_$batch.log" 2>&1 &
      pids+=($!)
    done
  done
done
timeout "$COMPILE_S" $BENCH --mode infer --alphas "$ALPHAS" --kernels reference --dtype "$DTYPES" \
  --infer-batch-size "$INFER_BATCH" --compile-only > "$WORK/compile_infer.log" 2>&1 &
pids+=($!)
timeout "$COMPILE_S" $PY -m mobilenet_jax.train $TRAIN_FLAGS --max-steps 1 \
  --workdir "$WORK/train_compile" > "$WORK/compile_train.log" 2>&1 &
pids+=($!)
wait "${pids[@]}"  # (a bare `wait` would also wait for the log's tee)
unset XLA_PYTHON_CLIENT_PREALLOCATE
grep -h "^compiled\|error" "$WORK"/compile_*.log
echo "# compiling took $((SECONDS - start)) s"

echo "## a. the train step grid (limit ${GRID_S} s)"
timeout "$GRID_S" $BENCH --mode train --alphas "$ALPHAS" --dtype "$DTYPES" \
  --batch-size "$BATCHES" --min-time "$MIN_TIME" --json "$OUT/grid.json"

echo "## b. train, ${TRAIN_EPOCHS} epochs (limit ${TRAIN_S} s), then evaluate (limit ${EVAL_S} s)"
timeout "$TRAIN_S" $PY -m mobilenet_jax.train $TRAIN_FLAGS --workdir "$WORK/train" 2>&1 \
  | while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done \
  | tee "$OUT/train.log"
cp "$WORK/train/metrics.jsonl" "$WORK/train/config.json" "$OUT/" 2>/dev/null
timeout "$EVAL_S" $PY -m mobilenet_jax.evaluate --ckpt "$WORK/train" --compile-cache "$CACHE" \
  --json "$OUT/eval.json"

echo "## c. inference and the loop's overhead (limit ${INFER_S} s)"
timeout "$INFER_S" $BENCH --mode infer --alphas "$ALPHAS" --kernels reference --dtype "$DTYPES" \
  --infer-batch-size "$INFER_BATCH" --min-time "$MIN_TIME" --json "$OUT/infer.json"
timeout "$INFER_S" $BENCH --mode loop --alphas "${TRAIN_ALPHA}" --kernels reference \
  --batch-size "$LOOP_BATCHES" --min-time "$MIN_TIME" --json "$OUT/loop.json"

$PY experiments/gpu/summarize.py "$OUT" | tee "$OUT/summary.txt"
echo "# done $(date -u), $SECONDS s"
