"""Classify image files with a trained checkpoint, or with a model made by `export`.

    python -m mobilenet_jax.predict --ckpt runs/a/checkpoints/latest cat.jpg photos/
    python -m mobilenet_jax.predict --pretrained cifar10 cat.jpg
    python -m mobilenet_jax.predict --tflite export/model_int8.tflite cat.jpg
    python -m mobilenet_jax.predict --onnx export/model.onnx cat.jpg

Reads PNG and JPEG of any size and mode; a directory means every such file in it. Each image
becomes a square of the size the run's training images were stored at, then the network's
input exactly as in training (deploy/predictor.py). Class names and normalisation come from
the checkpoint (or the export's metadata.json): no dataset needed.
"""
import json
import sys

from mobilenet_jax import cli, process
from mobilenet_jax.core.checkpoint import CheckpointError
from mobilenet_jax.deploy.onnx import OnnxError
from mobilenet_jax.deploy.predictor import image_files, load_classifier, predict
from mobilenet_jax.deploy.tflite import TFLiteError
from mobilenet_jax.errors import write_error_line


def print_results(results: list) -> None:
    for result in results:
        print(result["file"])
        for r in result["top_k"]:
            named = r["class"] != str(r["label"])
            print(f"  {r['probability']:7.2%}  {r['class']}" + (f" ({r['label']})" if named else ""))


def main(argv=None):
    process.start_command()
    parser = cli.parser("mobilenet_jax.predict", __doc__)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    cli.add_checkpoint_flags(parser, required=False)
    parser.add_argument("--tflite", metavar="MODEL", help="a .tflite file written by export "
                        "(its metadata.json beside it) to run instead of a checkpoint")
    parser.add_argument("--onnx", metavar="MODEL", help="a .onnx file written by export "
                        "(its metadata.json beside it) to run in ONNX Runtime instead")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default: 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    cli.add_compile_cache_flag(parser)
    args = parser.parse_args(argv)
    problems = []
    try:
        process.use_compile_cache(args.compile_cache)
        ckpt = cli.checkpoint_arg(args)
        if sum(a is not None for a in (ckpt, args.tflite, args.onnx)) != 1:
            raise ValueError("pass one of --ckpt CKPT (a trained run), --pretrained NAME (a "
                             "model shipped with the package), --tflite MODEL or --onnx MODEL "
                             "(an exported model)")
        if args.top_k < 1:
            raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
        files, problems = image_files(args.inputs)
        classify, config = load_classifier(ckpt, args.tflite, args.onnx,
                                           process.output_dropped)
        if config.data.class_names == ():
            print("note: the checkpoint stores no class names (trained before they were "
                  "stored); showing label numbers", file=sys.stderr)
        results, unreadable = predict(files, classify, config,
                                      min(args.top_k, config.network.num_classes))
        problems += unreadable
    except (ValueError, CheckpointError, TFLiteError, OnnxError) as e:
        cli.fail(str(e))
    print_results(results)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
        except OSError as e:
            problems.append(write_error_line(e, f"write {args.json}", "--json"))
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        raise SystemExit(2)


if __name__ == "__main__":
    main()
