#!/bin/bash
# Our train step alone, variants interleaved: REPS rounds over ALPHAS x STEMS (one process per
# alpha, stem and variant, as a user's run; BATCHES in each), results in $OUT/<variant>_r<round>
# _a<alpha>_s<stem>.json; `python experiments/cpu_throughput/grid_table.py $OUT` prints them.
# A variant is NAME=DIR or NAME=DIR@XLA_FLAGS (DIR: a checkout, e.g. `git worktree add
# ../before <commit>`; "." is this one). Run from the repository root.
set -eu
OUT=${OUT:?set OUT=experiments/<question>/<name>}
REPS=${REPS:-2}
ALPHAS=${ALPHAS:-0.25 1.0}
STEMS=${STEMS:-1 2}
BATCHES=${BATCHES:-64,128}
VARIANTS=${VARIANTS:-now=.}
PY=$PWD/.venv/bin/python
mkdir -p $OUT
{ date -u; git log -1 --format='commit %H'; lscpu | grep -E 'Model name|CPU family|Model:'; } > $OUT/machine.txt
for rep in $(seq 1 $REPS); do
  for a in $ALPHAS; do for s in $STEMS; do for v in $VARIANTS; do
    name=${v%%=*}; spec=${v#*=}; dir=${spec%%@*}; flags=""
    [[ $spec == *@* ]] && flags=${spec#*@}
    file=${name}_r${rep}_a${a}_s${s}.json
    json=$(realpath -m --relative-to=$dir $OUT)/$file
    (cd $dir && PYTHONPATH=$PWD XLA_FLAGS="$flags" $PY -m mobilenet_jax.benchmark --alphas $a \
      --stem-stride $s --batch-size $BATCHES --mode train --compile-cache off --min-time 3 \
      --json $json > /dev/null)
    # the JSON's command names its file from this checkout, as the commands in READMEs do
    sed -i "s#--json $json#--json $OUT/$file#" $OUT/$file
    echo "$(date -u +%T) $name round $rep alpha $a stem $s done"
  done; done; done
done
