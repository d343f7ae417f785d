"""Export a checkpoint to TFLite for phones (float32, and with --int8 full-integer int8), to
ONNX for servers and to a serialized StableHLO function for other JAX code, and measure the
exported models against the checkpoint.

    python -m mobilenet_jax.export --ckpt runs/a/checkpoints/latest --out export --int8
    python -m mobilenet_jax.export --ckpt runs/a --out export --format tflite,onnx,stablehlo
    python -m mobilenet_jax.export --pretrained cifar10 --out export --parity-images 0

Writes DIR/model.tflite (DIR/model_int8.tflite), DIR/model.onnx, DIR/model.stablehlo,
DIR/labels.txt, DIR/metadata.json (input size, normalisation, class names, source checkpoint)
and DIR/parity.json: each model's logits and top-1 against JAX's on the checkpoint's test
split, accuracies, file sizes and latencies (of one input: one image, or --batch images for the
TFLite models; the others also of 64 images). The int8 model is calibrated on training images
of the checkpoint's dataset (or of --image-folder, a folder of the same classes). ONNX and
StableHLO exports need no TensorFlow.
"""
import pathlib

from mobilenet_jax import cli, process
from mobilenet_jax.core import checkpoint as ckpt_lib
from mobilenet_jax.data.arrays import DataError
from mobilenet_jax.deploy.tflite import TFLiteError
from mobilenet_jax.deploy.exports import ANY_BATCH, FORMATS, export
from mobilenet_jax.deploy.onnx import OnnxError


def format_report(report: dict) -> str:
    p = report.get("parity")
    if p is None:
        return "parity not measured (--parity-images 0)"
    big = str(ANY_BATCH)
    lines = [f"parity on {p['images']} test images of {report['dataset']} "
             f"({report['threads']} threads):",
             f"{'model':<9} {'top-1':>7} {'agree':>7} {'max|dlogit|/range':>18} "
             f"{'size KiB':>9} {'ms/input':>9} {f'ms/{big}':>8}",
             f"{'jax':<9} {p['jax']['top1']:>7.2%} {'':>7} {'':>18} {'':>9} "
             f"{p['jax']['latency_ms']:>9.3f} {p['jax']['latency_ms_at_batch'][big]:>8.2f}"]
    for name in ("float", "int8", "onnx", "stablehlo"):
        if name in p:
            m = p[name]
            agree = m.get("top1_agreement_with_float", m["top1_agreement_with_jax"])
            at_big = m["latency_ms_at_batch"].get(big)
            lines.append(f"{name:<9} {m['top1']:>7.2%} {agree:>7.2%} "
                         f"{m['max_abs_logit_difference_over_range']:>18.2e} "
                         f"{report['file_bytes'][name] / 1024:>9.0f} {m['latency_ms']:>9.3f} "
                         + (f"{at_big:>8.2f}" if at_big is not None else f"{'':>8}"))
    lines.append(f"float/int8: the TFLite models; agree: top-1 agreement with JAX (int8: with "
                 f"float); ms/input: one input (a TFLite model's batch, else one image); "
                 f"ms/{big}: {big} images")
    return "\n".join(lines)


def main(argv=None):
    process.start_command()
    parser = cli.parser("mobilenet_jax.export", __doc__)
    cli.add_checkpoint_flags(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    parser.add_argument("--format", default="tflite",
                        help=f"comma list of {', '.join(FORMATS)} (default: tflite)")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="images per input of the TFLite models (default: 1)")
    parser.add_argument("--int8", action="store_true",
                        help="also write a full-integer int8 TFLite model")
    parser.add_argument("--calibration-images", type=int, default=500, metavar="N",
                        help="training images that calibrate the int8 model (default: 500)")
    parser.add_argument("--parity-images", type=int, default=None, metavar="N",
                        help="test images to measure parity on (default: the whole test split; "
                             "0: no parity check, no data needed for a float export)")
    cli.add_config_flags(parser, ("places",), all_optional=True)
    cli.add_compile_cache_flag(parser)
    args = parser.parse_args(argv)
    try:
        process.use_compile_cache(args.compile_cache)
        formats = tuple(f for f in args.format.split(",") if f)
        if not formats or set(formats) - set(FORMATS):
            raise ValueError(f"--format takes a comma list of {', '.join(FORMATS)}, "
                             f"got {args.format!r}")
        if args.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {args.batch}")
        if args.calibration_images < 1:
            raise ValueError(f"--calibration-images must be >= 1, got {args.calibration_images}")
        if args.parity_images is not None and args.parity_images < 0:
            raise ValueError(f"--parity-images must be >= 0, got {args.parity_images}")
        report = export(ckpt_lib.resolve(cli.checkpoint_arg(args)), pathlib.Path(args.out),
                        args.int8, args.calibration_images, args.parity_images, args.data_dir,
                        bool(args.offline), quiet=process.output_dropped, formats=formats,
                        batch=args.batch, image_folder=args.image_folder)
    except (ValueError, DataError, ckpt_lib.CheckpointError, TFLiteError, OnnxError) as e:
        cli.fail(str(e))
    print(format_report(report))


if __name__ == "__main__":
    main()
