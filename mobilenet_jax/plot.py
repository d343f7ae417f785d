"""Training curves: loss and top-1 (train and validation) against the epoch, for one run or
several overlaid (legends from their configs).

    python -m mobilenet_jax.plot runs/a runs/b --out curves.png [--metric top1|loss|top5]

`train` writes `<workdir>/curves.png` with the same figure after every epoch.
"""
from mobilenet_jax import cli, process
from mobilenet_jax.errors import write_error_line
from mobilenet_jax.training.curves import METRICS, PlotError, figure, read_run, save


def main(argv=None):
    process.start_command()
    parser = cli.parser("mobilenet_jax.plot", __doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run workdirs")
    parser.add_argument("--out", required=True, metavar="FILE.png")
    parser.add_argument("--metric", choices=METRICS, help="one panel of this metric "
                        "(default: loss and top1)")
    args = parser.parse_args(argv)
    try:
        runs = [read_run(r) for r in args.runs]
        save(figure(runs, (args.metric,) if args.metric else ("loss", "top1")), args.out)
    except PlotError as e:
        cli.fail(str(e))
    except OSError as e:
        cli.fail(write_error_line(e, f"write {args.out}", "--out"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
