#!/bin/bash
# Here, before experiments/gpu/run.sh goes to a GPU machine without TensorFlow or a network:
#   bash experiments/gpu/prepare.sh
# writes the 6-class CIFAR-100 subset as an image folder (runs/gpu_data/cifar100-6class, what
# `train --image-folder` reads without TensorFlow) and the locked tensorboardX as a wheel
# (.whl/, which run.sh installs there). Both are ignored by git; send them with the tree.
set -euo pipefail
PY=${PY:-.venv/bin/python}
SUBSET=${SUBSET:-../shared/data/cifar100-6class-tfds}
DATA=${DATA:-runs/gpu_data/cifar100-6class}
[ -d "$DATA/train" ] || $PY experiments/recipe/to_image_folder.py --data-dir "$SUBSET" --out "$DATA"
version=$(sed -n 's/^tensorboardx==//Ip' requirements.lock)
mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
  "tensorboardX==$version"
du -sh "$DATA" .whl
