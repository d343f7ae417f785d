"""An image folder of ImageNet-like JPEGs for the data-pipeline benchmark: COUNT images in
10 classes, sides drawn around ImageNet's typical 500x375 (quality 90, smooth content with
noise, so files are of photo size rather than flat colour).

    python experiments/data_pipeline/make_folder.py OUT [--count 2400]
"""
import argparse
import pathlib

import numpy as np
from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=2400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for i in range(args.count):
        h, w = (int(v) for v in rng.choice([(375, 500), (500, 375), (333, 500), (500, 500)]))
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2) + c) for c in range(3)], -1)
        pixels = np.clip(127 + 80 * base + rng.normal(0, 12, (h, w, 3)), 0, 255)
        folder = pathlib.Path(args.out) / "train" / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


if __name__ == "__main__":
    main()
