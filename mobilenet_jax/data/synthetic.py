"""A synthetic image folder that any model separates: for smoke runs, and for checking that a
model evaluates as it trained (experiments/eval_statistics)."""
import pathlib

import numpy as np
from PIL import Image

COLOURS = {"reds": (200, 40, 40), "greens": (40, 200, 40), "blues": (40, 40, 200)}


def write_colour_folder(root, train: int = 60, test: int = 20, seed: int = 0) -> None:
    """root/{train,test}/<colour>/*.png: for each of 3 colours, squares of 20-60 px of that
    colour with Gaussian noise (sd 30) on every pixel and channel."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for name, colour in COLOURS.items():
            folder = pathlib.Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                side = int(rng.integers(20, 61))
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (side, side, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
