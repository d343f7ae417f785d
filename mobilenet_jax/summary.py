"""Per-layer table of a MobileNet v1: output shape, parameters, mult-adds.

    python -m mobilenet_jax.summary --alpha 0.5 --resolution 224 --num-classes 1000

Counted analytically from the layer shapes of the real module, nothing computed
(models/summary.py says how).
"""
from mobilenet_jax import cli, process
from mobilenet_jax.config import Config
from mobilenet_jax.models.mobilenet import MobileNetV1
from mobilenet_jax.models.summary import format_table, summarize


def main(argv=None):
    process.start_command()
    parser = cli.parser("mobilenet_jax.summary", __doc__)
    # The paper's setting (ImageNet, 224x224) by default: its Tables 1, 2 and 6-8.
    cli.add_config_flags(parser, groups=("network",), names=("resolution",),
                         defaults={"resolution": 224, "num_classes": 1000})
    args = parser.parse_args(argv)
    try:
        config = Config(**cli.given_flags(args))
        model = MobileNetV1(**config.replace(kernels="reference").model_kwargs())
        rows = summarize(model, config.data.resolution)
    except ValueError as e:
        cli.fail(str(e))
    print(f"MobileNet v1, alpha={args.width_multiplier}, {args.resolution}x{args.resolution}, "
          f"{args.num_classes} classes, {args.block} block, stem stride {args.stem_stride}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
