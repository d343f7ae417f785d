"""Write a TFDS dataset's train and test splits as an image folder (PATH/<split>/<class>/N.png),
for a machine without TensorFlow to train on with --image-folder.

    python experiments/recipe/to_image_folder.py --data-dir ../shared/data/cifar100-6class-tfds \\
        --out runs/cifar100-6class-folder
"""
import argparse
import pathlib

from PIL import Image

from mobilenet_jax.data import from_tfds


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for split in ("train", "test"):
        s = from_tfds.load(args.dataset, split, args.data_dir, offline=True)
        names = s.class_names or tuple(str(c) for c in range(int(s.labels.max()) + 1))
        for k, (image, label) in enumerate(zip(s.images, s.labels)):
            folder = pathlib.Path(args.out) / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{k}.png")
        print(f"{split}: {len(s)} images of {len(set(s.labels.tolist()))} classes")


if __name__ == "__main__":
    main()
