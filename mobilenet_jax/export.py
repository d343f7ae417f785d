"""Export a checkpoint to TFLite for phones (float32, and with --int8 full-integer int8), and
measure the exported models against the checkpoint.

    python -m mobilenet_jax.export --ckpt runs/a/checkpoints/latest --out export --int8

Writes DIR/model.tflite (DIR/model_int8.tflite), DIR/labels.txt, DIR/metadata.json (input size,
normalisation, class names, source checkpoint) and DIR/parity.json: each model's logits and
top-1 against JAX's on the checkpoint's test split, accuracies, file sizes and single-image
latency. The int8 model is calibrated on training images of the checkpoint's dataset.
"""
import json
import os
import pathlib
import statistics
import time

import jax
import numpy as np

from mobilenet_jax import checkpoint as ckpt_lib
from mobilenet_jax import cli, data, evaluate, steps, tflite
from mobilenet_jax.config import Config
from mobilenet_jax.predict import CheckpointModel

FLOAT_MODEL, INT8_MODEL = "model.tflite", "model_int8.tflite"
LATENCY_RUNS = 100


def calibration_images(config: Config, count: int, data_dir, offline: bool) -> list:
    """`count` training images of the checkpoint's dataset (a fixed random choice),
    standardised as the network's inputs, one (1, H, W, 3) array each."""
    train = data.load_split(config, config.split, data_dir, offline)
    chosen = np.random.default_rng([config.seed, 0xCA1]).permutation(len(train))[:count]
    images = steps.float32_input(train.images[np.sort(chosen)], config)
    return [images[i:i + 1] for i in range(len(images))]


def metadata(config: Config, step_dir, step: int, int8: bool) -> dict:
    r = config.resolution
    return {
        "model": FLOAT_MODEL, "model_int8": INT8_MODEL if int8 else None,
        "input": {"shape": [1, r, r, 3], "layout": "NHWC", "channels": "RGB",
                  "dtype": "float32 (int8 for model_int8: q = round(x / scale) + zero_point, "
                           "both stored in the model)",
                  "preprocessing": "centre square crop; bilinear (antialiased) resize to "
                                   + (f"{config.image_size}x{config.image_size}, then " if
                                      config.image_size != r else "")
                                   + f"{r}x{r}; pixels / 255; (x - mean) / std per channel",
                  "mean": list(config.mean), "std": list(config.std)},
        "output": {"shape": [1, config.num_classes], "meaning": "logits (softmax gives "
                   "probabilities)", "labels": "labels.txt, line i is label i"},
        "class_names": list(config.label_names()),
        "width_multiplier": config.width_multiplier, "resolution": r,
        "source": {"checkpoint": str(step_dir), "step": step},
        "config": config.to_dict(),
    }


def median_ms(fn, runs: int = LATENCY_RUNS) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def parity(model: CheckpointModel, runners: dict, test: data.Split, config: Config) -> dict:
    """Each exported model against the checkpoint in JAX, on the test images."""
    images = steps.float32_input(test.images, config)
    reference = model(images)
    top1 = reference.argmax(-1)
    one = images[:1]
    forward = lambda: jax.block_until_ready(model.forward(model.variables, one))  # noqa: E731
    result = {"images": len(test), "jax": {"top1": float((top1 == test.labels).mean()),
                                          "latency_ms": median_ms(forward)}}
    logits = {name: runner(images) for name, runner in runners.items()}
    for name, runner in runners.items():
        result[name] = {
            "top1": float((logits[name].argmax(-1) == test.labels).mean()),
            "top1_agreement_with_jax": float((logits[name].argmax(-1) == top1).mean()),
            "max_abs_logit_difference": float(np.abs(logits[name] - reference).max()),
            "logit_range": float(reference.max() - reference.min()),
            "latency_ms": median_ms(lambda: runner.invoke(one)),
        }
        result[name]["max_abs_logit_difference_over_range"] = (
            result[name]["max_abs_logit_difference"] / result[name]["logit_range"])
    if "int8" in logits and "float" in logits:
        result["int8"]["top1_agreement_with_float"] = float(
            (logits["int8"].argmax(-1) == logits["float"].argmax(-1)).mean())
    return result


def export(step_dir, out: pathlib.Path, int8: bool = False, calibration: int = 500,
           parity_images: int | None = None, data_dir=None, offline: bool = False,
           say=print) -> dict:
    state, config, position, _ = evaluate.load_state(step_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "labels.txt").write_text("".join(f"{n}\n" for n in config.label_names()))
    except OSError as e:
        raise ValueError(cli.write_error_line(e, f"write to {out}", "--out")) from None
    test = None
    if parity_images != 0:  # read the data before the slow conversion: absent data fails fast
        test = data.load_split(config, "test", data_dir, offline)
        test = test.take(np.arange(min(parity_images or len(test), len(test))))
    calibration_set = calibration_images(config, calibration, data_dir, offline) if int8 else None

    variables = jax.device_get(state.eval_variables())
    files = {"float": out / FLOAT_MODEL}
    models = {"float": tflite.convert(config, variables)}
    if int8:
        files["int8"] = out / INT8_MODEL
        models["int8"] = tflite.convert(config, variables, calibration_set)
    try:
        for name, model in models.items():
            files[name].write_bytes(model)
        (out / "metadata.json").write_text(json.dumps(
            metadata(config, step_dir, position["step"], int8), indent=2) + "\n")
    except OSError as e:
        raise ValueError(cli.write_error_line(e, f"write to {out}", "--out")) from None
    sizes = {name: os.path.getsize(path) for name, path in files.items()}
    say(f"wrote {', '.join(f'{p} ({sizes[n] / 1024:.0f} KiB)' for n, p in files.items())}, "
        f"labels.txt and metadata.json")

    report = {"checkpoint": str(step_dir), "step": position["step"],
              "dataset": config.image_folder or config.dataset,
              "file_bytes": sizes, "threads": os.cpu_count()}
    if int8:
        report["int8_size_over_float"] = sizes["int8"] / sizes["float"]
    if test is not None:
        runners = {name: tflite.Runner(model, num_threads=os.cpu_count())
                   for name, model in models.items()}
        report["ops"] = sorted(set(runners["float"].ops))
        report["parity"] = parity(CheckpointModel(state, config), runners, test, config)
        (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    p = report.get("parity")
    if p is None:
        return "parity not measured (--parity-images 0)"
    lines = [f"parity on {p['images']} test images of {report['dataset']} "
             f"({report['threads']} threads):",
             f"{'model':<8} {'top-1':>7} {'agree':>7} {'max|dlogit|/range':>18} "
             f"{'size KiB':>9} {'latency ms':>11}",
             f"{'jax':<8} {p['jax']['top1']:>7.2%} {'':>7} {'':>18} {'':>9} "
             f"{p['jax']['latency_ms']:>11.3f}"]
    for name in ("float", "int8"):
        if name in p:
            m = p[name]
            agree = m.get("top1_agreement_with_float", m["top1_agreement_with_jax"])
            lines.append(f"{name:<8} {m['top1']:>7.2%} {agree:>7.2%} "
                         f"{m['max_abs_logit_difference_over_range']:>18.2e} "
                         f"{report['file_bytes'][name] / 1024:>9.0f} {m['latency_ms']:>11.3f}")
    lines.append("agree: top-1 agreement of float with JAX, of int8 with float")
    return "\n".join(lines)


def main(argv=None):
    parser = cli.parser("mobilenet_jax.export", __doc__)
    parser.add_argument("--ckpt", required=True, help="run workdir, checkpoints dir, latest, or step dir")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    parser.add_argument("--int8", action="store_true", help="also write a full-integer int8 model")
    parser.add_argument("--calibration-images", type=int, default=500, metavar="N",
                        help="training images that calibrate the int8 model (default: 500)")
    parser.add_argument("--parity-images", type=int, default=None, metavar="N",
                        help="test images to measure parity on (default: the whole test split; "
                             "0: no parity check, no data needed for a float export)")
    cli.add_config_flags(parser, names=("data_dir", "offline"), all_optional=True)
    args = parser.parse_args(argv)
    try:
        if args.calibration_images < 1:
            raise ValueError(f"--calibration-images must be >= 1, got {args.calibration_images}")
        if args.parity_images is not None and args.parity_images < 0:
            raise ValueError(f"--parity-images must be >= 0, got {args.parity_images}")
        report = export(ckpt_lib.resolve(args.ckpt), pathlib.Path(args.out), args.int8,
                        args.calibration_images, args.parity_images, args.data_dir,
                        bool(args.offline))
    except (ValueError, data.DataError, ckpt_lib.CheckpointError, tflite.TFLiteError) as e:
        cli.fail(str(e))
    print(format_report(report))


if __name__ == "__main__":
    main()
