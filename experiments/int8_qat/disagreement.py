"""Where an int8 TFLite model's top-1 leaves the float model's: the rounding of the weights,
of the layer inputs (as --qat simulates them), or of the int8 logits the model outputs.

    python experiments/int8_qat/disagreement.py RUN [RUN ...] [--data-dir DIR]

RUN: a run of experiments/int8_qat/run.sh with its export/ (model_int8.tflite). On the test
split: top-1 of the float model, of the float model with weights rounded, with weights and
layer inputs rounded (core/quantization.py), and of the int8 model; the int8 model's top-1
agreement with each; then the same with the logits also rounded to the int8 output's step
((max - min) / 255 of the float logits), and how many images that step makes a tie of.
"""
import argparse

import jax
import numpy as np

from mobilenet_jax.core import checkpoint, quantization, restore, steps
from mobilenet_jax.data import sources
from mobilenet_jax.deploy import tflite


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data-dir", default="../shared/data/cifar100-6class-tfds")
    args = parser.parse_args()
    for run in args.runs:
        restored = restore.restore(checkpoint.resolve(run))
        config, state = restored.config, restored.state
        variables = jax.device_get(state.eval_variables())
        test = sources.load_split(config, "test", args.data_dir, True)
        images = steps.float32_input(test.images_at(np.arange(len(test))), config)
        forward = jax.jit(lambda v, x: state.apply_fn(v, x, train=False))
        rounded = {"params": quantization.fake_quantized_params(variables["params"]),
                   "batch_stats": variables["batch_stats"]}
        with quantization.fake_quantized_inputs():
            simulated = np.asarray(jax.jit(lambda v, x: state.apply_fn(v, x, train=False))(
                rounded, images))
        logits = {"float": np.asarray(forward(variables, images)),
                  "weights rounded": np.asarray(forward(rounded, images)),
                  "weights and inputs rounded": simulated,
                  "int8": tflite.Runner(f"{run}/export/model_int8.tflite")(images)}
        low, high = min(logits["float"].min(), 0), max(logits["float"].max(), 0)
        step = (high - low) / 255
        print(f"{run}: {len(test)} test images; logits from {low:.1f} to {high:.1f}, "
              f"int8 output step {step:.3f}")
        print(f"  {'model':<28} {'top-1':>7} {'int8 agrees':>12} {'+ output rounded':>17}")
        for name, x in logits.items():
            top1 = float((x.argmax(-1) == test.labels).mean())
            print(f"  {name:<28} {top1:>7.2%} {agreement(logits['int8'], x):>12.2%} "
                  f"{agreement(logits['int8'], np.round(x / step) * step):>17.2%}")
        top2 = np.sort(np.round(logits["float"] / step), -1)[:, -2:]
        print(f"  float logits rounded to the output step tie at the top on "
              f"{float((top2[:, 0] == top2[:, 1]).mean()):.2%} of the images")


if __name__ == "__main__":
    main()
