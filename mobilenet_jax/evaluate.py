"""Evaluate a checkpoint: top-1, top-5, mean loss (and per-class accuracy).

    python -m mobilenet_jax.evaluate --ckpt checkpoints/latest

--ckpt takes a run workdir, its checkpoints/ dir, `latest` or one step's dir. The model is
rebuilt from the config stored in the checkpoint; model flags, when given, must match it.
"""
import json
from typing import Optional

import jax
import numpy as np

from mobilenet_jax import checkpoint as ckpt_lib
from mobilenet_jax import cli, data, hostmem, steps
from mobilenet_jax.parallel import Devices

MODEL_FLAGS = ("width_multiplier", "num_classes", "block", "stem_stride", "dtype", "kernels",
               "resolution")
# May differ from training: they change how the same weights are run, not which weights.
FREE_FLAGS = ("dtype", "kernels")


def add_sums(total: Optional[dict], new: dict) -> dict:
    new = {k: float(v) for k, v in new.items()}
    return new if total is None else {k: total[k] + new[k] for k in total}


def summarize_metrics(sums: dict, prefix: str) -> dict:
    n = max(float(sums["count"]), 1.0)
    return {f"{prefix}_{k}": float(sums[k]) / n for k in ("loss", "top1", "top5")}


def evaluate_split(state, split: data.Split, batch_size: int, devices: Devices, step_fn,
                   num_classes: int = 0) -> dict:
    """`step_fn` (a jitted `steps.eval_step`) over the split: its summed metrics, and with
    `num_classes`, also "per_class_correct" and "per_class_count" arrays."""
    sums = None
    per_class_correct, per_class_count = np.zeros(num_classes), np.zeros(num_classes)
    for local in data.eval_batches(split, batch_size, devices.process_index,
                                   devices.process_count):
        batch = devices.global_batch(local)
        metrics, correct = step_fn(state, batch)
        sums = add_sums(sums, jax.device_get(metrics))
        if num_classes:
            correct, labels, mask = jax.device_get((correct, batch["label"], batch["mask"]))
            np.add.at(per_class_correct, labels[mask > 0], correct[mask > 0])
            np.add.at(per_class_count, labels[mask > 0], 1)
    if num_classes:
        sums.update(per_class_correct=per_class_correct, per_class_count=per_class_count)
    return sums


def checkpoint_config(step_dir, overrides: dict | None = None):
    """The config stored in a checkpoint, with the flags that may differ applied; the others
    must match it. Starts no JAX backend."""
    config = ckpt_lib.read_config(step_dir)
    for name, value in (overrides or {}).items():
        if name not in FREE_FLAGS and getattr(config, name) != value:
            raise ckpt_lib.CheckpointError(
                f"checkpoint {step_dir} is a model with {name}={getattr(config, name)!r}, but "
                f"{name}={value!r} was passed; drop the flag or pass a matching checkpoint")
    return config.replace(**(overrides or {}))


def load_state(step_dir, overrides: dict | None = None):
    """(state, config, data position, devices) of a checkpoint, the model rebuilt from the
    config stored in it."""
    config = checkpoint_config(step_dir, overrides)
    devices = Devices(jax.device_count())
    abstract = steps.build(config).abstract_state(devices)
    state, _, position = ckpt_lib.restore_step(step_dir, abstract)
    return state, config, position, devices


def evaluate(step_dir, split: str = "test", data_dir=None, offline: bool = False,
             batch_size: int = 1000, overrides: dict | None = None) -> dict:
    state, config, position, devices = load_state(step_dir, overrides)
    batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
    dataset = data.load_split(config, split, data_dir, offline)
    step_fn = steps.build(config).jit_steps(devices).eval
    sums = evaluate_split(state, dataset, batch_size, devices, step_fn, config.num_classes)
    per_class_correct, per_class_count = sums["per_class_correct"], sums["per_class_count"]
    n = sums["count"]
    names = dataset.class_names or config.label_names()
    return {"checkpoint": str(step_dir), "step": position["step"], "split": split,
            "examples": int(n), "top1": sums["top1"] / n, "top5": sums["top5"] / n,
            "loss": sums["loss"] / n,
            "per_class": {names[c]: {"label": c, "examples": int(per_class_count[c]),
                                     "top1": per_class_correct[c] / per_class_count[c]}
                          for c in range(config.num_classes) if per_class_count[c]}}


def main(argv=None):
    parser = cli.parser("mobilenet_jax.evaluate", __doc__)
    parser.add_argument("--ckpt", required=True, help="run workdir, checkpoints dir, latest, or step dir")
    parser.add_argument("--split", default="test", help="TFDS split expression (default: test)")
    parser.add_argument("--batch-size", type=int, default=1000, help="default: 1000")
    parser.add_argument("--per-class", action="store_true", help="print per-class accuracy")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    cli.add_config_flags(parser, names=("data_dir", "offline") + MODEL_FLAGS, all_optional=True)
    args = parser.parse_args(argv)
    overrides = cli.given_flags(args, MODEL_FLAGS)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        step_dir = ckpt_lib.resolve(args.ckpt)
        # Before JAX starts: the allocator is set from the size of an eval step.
        hostmem.keep_freed_memory(hostmem.estimated_step_bytes(
            checkpoint_config(step_dir, overrides), args.batch_size, train=False))
        result = evaluate(step_dir, args.split, args.data_dir, bool(args.offline),
                          args.batch_size, overrides)
    except (ValueError, data.DataError, ckpt_lib.CheckpointError) as e:
        cli.fail(str(e))
    print(f"{result['checkpoint']} (step {result['step']}), split {result['split']}: "
          f"{result['examples']} examples  top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}"
          f"  loss {result['loss']:.4f}")
    if args.per_class:
        print(f"{'label':>5}  {'class':<24} {'examples':>8} {'top-1':>7}")
        for name, r in result["per_class"].items():
            print(f"{r['label']:>5}  {name:<24} {r['examples']:>8} {r['top1']:>7.4f}")
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        except OSError as e:
            cli.fail(cli.write_error_line(e, f"write {args.json}", "--json"))


if __name__ == "__main__":
    main()
