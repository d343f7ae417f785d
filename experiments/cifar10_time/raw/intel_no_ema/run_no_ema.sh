# Ours without the weight average (--ema-decay 0), seeds 0-3, as run.sh runs ours; the data
# unpacked as ../../README.md says, the caches run.sh left in /tmp/cifar10_time. From the repository root.
set -eu
OUT=experiments/cifar10_time/raw/intel_no_ema
WORK=/tmp/cifar10_time
export MOBILENET_JAX_DECODED_CACHE=$WORK/decoded
{ date -u; git log -1 --format='commit %H'; lscpu | grep -E 'Model name|CPU family|Model:'; } > $OUT/machine.txt
for seed in 0 1 2 3; do
  rm -rf $WORK/noema_$seed
  t0=$(date +%s.%N)
  .venv/bin/python -m mobilenet_jax.train --image-folder /tmp/cifar10 --alpha 0.25 --stem-stride 1 \
    --epochs 5 --warmup-epochs 1 --val-fraction 0 --batch-size 64 --seed $seed --ema-decay 0 \
    --workdir $WORK/noema_$seed --compile-cache $WORK/jax_cache > $OUT/ours_s$seed.log 2>&1
  t1=$(date +%s.%N)
  .venv/bin/python -m mobilenet_jax.evaluate --ckpt $WORK/noema_$seed --compile-cache $WORK/jax_cache \
    --json $OUT/ours_s${seed}_eval.json > /dev/null 2>&1
  .venv/bin/python -c "import json,sys; e=json.load(open(sys.argv[1])); print(json.dumps({'who':'ours','ema_decay':0,'seed':int(sys.argv[2]),'train_wall_s':float(sys.argv[4])-float(sys.argv[3]),'top1':e['top1']}))" \
    $OUT/ours_s${seed}_eval.json $seed $t0 $t1 >> $OUT/results.jsonl
  tail -1 $OUT/results.jsonl
done
