"""Ship a run's weights as the package's pretrained model NAME: a weights-only checkpoint in
mobilenet_jax/weights/NAME/ (replacing what is there) and card.json beside it, with the test
accuracy of the shipped files measured here on a whole image folder's test split.

    .venv/bin/python experiments/cifar10/ship_weights.py --ckpt RUN --name cifar10 \
        --dataset cifar10 --image-folder CIFAR10_JPEG_DIR
"""
import argparse
import json
import pathlib
import shutil

from mobilenet_jax.core import checkpoint
from mobilenet_jax.core.restore import write_weights
from mobilenet_jax.evaluators.classification import evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="the run (workdir or step dir)")
    parser.add_argument("--name", required=True, help="the name users pass to --pretrained")
    parser.add_argument("--dataset", required=True,
                        help="the TFDS dataset of the same classes, the shipped config's data")
    parser.add_argument("--image-folder", required=True, help="the data its test split is from")
    args = parser.parse_args()
    out = checkpoint.PRETRAINED_DIR / args.name
    shutil.rmtree(out, ignore_errors=True)
    step_dir = write_weights(checkpoint.resolve(args.ckpt), out, dataset=args.dataset)
    # A package holds plain files: the step dir alone (`resolve` takes the newest step).
    (out / checkpoint.LATEST).unlink()
    # orbax's commit markers name the absolute path they were written to; only their presence
    # counts, so they ship without it (and the manifest is written again).
    for marker in step_dir.rglob("commit_success.txt"):
        marker.write_text("Checkpoint commit was successful\n")
    checkpoint.write_manifest(step_dir)
    report = evaluate(step_dir, "test", image_folder=args.image_folder)
    card = {"name": args.name, "test_top1": report["top1"], "test_top5": report["top5"],
            "test_loss": report["loss"], "test_examples": report["examples"],
            "step": report["step"],
            "weights_bytes": sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file()),
            "how": "experiments/cifar10/README.md"}
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card))


if __name__ == "__main__":
    main()
