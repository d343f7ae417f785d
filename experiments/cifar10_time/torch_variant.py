"""Writes a variant of the PyTorch script (../shared/bench/train_torch.py) whose augmentation
is ours in one or both of the two ways the script's differs:

- `--per-image-crop`: a crop offset per image (the script takes one offset per batch);
- `--black-padding`: the 4-pixel padding added before standardising, so it is black (the
  script pads the standardised images with 0, the mean colour).

    python experiments/cifar10_time/torch_variant.py [--per-image-crop] [--black-padding] OUT.py

The rest of the script is unchanged; OUT.py imports spec.py from the original's folder.
"""
import argparse
import pathlib
import sys

PER_BATCH_CROP = """            dx, dy = rng.integers(0, 9, 2)
            x = x[:, :, dy:dy + 32, dx:dx + 32]
"""
PER_IMAGE_CROP = """            dx, dy = (torch.from_numpy(v)[:, None] + torch.arange(32)
                      for v in rng.integers(0, 9, (2, len(idx))))
            x = x[torch.arange(len(idx))[:, None, None, None], torch.arange(3)[:, None, None],
                  dy[:, None, :, None], dx[:, None, None, :]]
"""
MEAN_PADDING = """            x = norm(xtr[idx])
            x = F.pad(x, (4, 4, 4, 4))
"""
BLACK_PADDING = """            x = norm(np.pad(xtr[idx], ((0, 0), (4, 4), (4, 4), (0, 0))))
"""
SPEC_PATH = "sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--script", type=pathlib.Path, default="../shared/bench/train_torch.py")
    ap.add_argument("--per-image-crop", action="store_true")
    ap.add_argument("--black-padding", action="store_true")
    args = ap.parse_args()
    text = args.script.read_text()
    changes = [(SPEC_PATH, f"sys.path.insert(0, {str(args.script.resolve().parent)!r})")]
    if args.per_image_crop:
        changes.append((PER_BATCH_CROP, PER_IMAGE_CROP))
    if args.black_padding:
        changes.append((MEAN_PADDING, BLACK_PADDING))
    for old, new in changes:
        if text.count(old) != 1:
            sys.exit(f"{args.script} no longer has this text once; update {__file__}:\n{old}")
        text = text.replace(old, new)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
