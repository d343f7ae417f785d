"""Top-1, top-5 and mean loss of a model on a dataset split (and per-class accuracy)."""
from typing import Optional

import jax
import numpy as np

from mobilenet_jax.core import restore, steps
from mobilenet_jax.core.metrics import add_sums
from mobilenet_jax.core.parallel import Devices, run_ahead
from mobilenet_jax.data import arrays, sources
from mobilenet_jax.data.prefetch import prefetch
from mobilenet_jax.data.streaming import StreamedSplit


def evaluate_split(state, split: arrays.Split | StreamedSplit, batch_size: int, devices: Devices,
                   step_fn, num_classes: int = 0) -> dict:
    """`step_fn` (a jitted `steps.eval_step`) over the split: its summed metrics, and with
    `num_classes`, also "per_class_correct" and "per_class_count" arrays. The results are read
    once all batches are dispatched (the device never waits for the host)."""
    outputs = []
    batches = split.eval_batches(batch_size, devices.process_index, devices.process_count)
    ahead = run_ahead(jax.default_backend())
    for batch in prefetch(batches, devices.global_batch, ahead["prefetch"]):
        metrics, correct = step_fn(state, batch)
        outputs.append((metrics, (correct, batch["label"], batch["mask"]) if num_classes else ()))
    sums = None
    per_class_correct, per_class_count = np.zeros(num_classes), np.zeros(num_classes)
    for metrics, per_example in jax.device_get(outputs):
        sums = add_sums(sums, metrics)
        if num_classes:
            correct, labels, mask = per_example
            np.add.at(per_class_correct, labels[mask > 0], correct[mask > 0])
            np.add.at(per_class_count, labels[mask > 0], 1)
    if num_classes:
        sums.update(per_class_correct=per_class_correct, per_class_count=per_class_count)
    return sums


def evaluate(step_dir, split: str = "test", data_dir=None, offline: bool = False,
             batch_size: int = 1000, overrides: Optional[dict] = None,
             input: Optional[str] = None, image_folder: Optional[str] = None) -> dict:
    """The checkpoint in `step_dir` on a split of its run's data, or of `image_folder` (held in
    memory or streamed as `input`, by default its run's config, says): a JSON-ready report."""
    model = restore.restore(step_dir, overrides)
    config = model.config.replace(input=input or model.config.run.input,
                                  image_folder=image_folder or model.config.places.image_folder)
    batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
    dataset = sources.load_split(config, split, data_dir, offline)
    step_fn = steps.build(config).jit_steps(model.devices).eval
    sums = evaluate_split(model.state, dataset, batch_size, model.devices, step_fn,
                          config.network.num_classes)
    per_class_correct, per_class_count = sums["per_class_correct"], sums["per_class_count"]
    n = sums["count"]
    names = dataset.class_names or config.label_names()
    return {"checkpoint": str(step_dir), "step": model.step, "split": split,
            "examples": int(n), "top1": sums["top1"] / n, "top5": sums["top5"] / n,
            "loss": sums["loss"] / n,
            "per_class": {names[c]: {"label": c, "examples": int(per_class_count[c]),
                                     "top1": per_class_correct[c] / per_class_count[c]}
                          for c in range(config.network.num_classes) if per_class_count[c]}}
