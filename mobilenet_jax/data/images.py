"""Image files (PNG, JPEG) as the network's uint8 RGB squares: one rule for every command.

An image is turned upright (EXIF orientation), made RGB (transparency composited over white;
grayscale, palette and 16-bit images converted), cropped to its centre square and resized
(bilinear, antialiased when shrinking) to the side the run's training images were stored at.
The network then resizes that to its resolution on the device, as in training.
"""
import pathlib

import numpy as np

from mobilenet_jax.errors import short_reason

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageError(Exception):
    """A file that cannot be read as an image."""


def is_image_file(path: pathlib.Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path) -> np.ndarray:
    """The image in file `path` as uint8 RGB (H, W, 3), upright."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    if not pathlib.Path(path).is_file():
        raise ImageError(f"{path} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16-bit grayscale: scale to 8 bits, do not clip
                image = Image.fromarray((np.asarray(image, np.float64) / 257).round()
                                        .clip(0, 255).astype(np.uint8))
            if "A" in image.getbands() or "transparency" in image.info:
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"),
                                              image.convert("RGBA"))
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path} is not a readable PNG or JPEG image "
                         f"({short_reason(e, 120)})") from None


def centre_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3 or 1) -> uint8 RGB (size, size, 3): centre square, resized if needed."""
    return _resized(centre_square(_rgb(image)), size)


# Inception-style training crops (Szegedy et al. 2015), as in the Flax ImageNet example and
# big_vision: a box of 8-100 % of the image's area with aspect ratio 3/4 to 4/3.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


def random_crop_box(height: int, width: int, rng: np.random.Generator) -> tuple:
    """(top, left, crop height, crop width) of a random-resized crop: up to CROP_ATTEMPTS
    draws of area and (log-uniform) aspect, the first box that fits the image; else the
    centre box of the image with its aspect clamped to CROP_ASPECT."""
    log_aspect = (np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1]))
    for _ in range(CROP_ATTEMPTS):
        area = height * width * rng.uniform(*CROP_AREA)
        aspect = np.exp(rng.uniform(*log_aspect))
        crop_w, crop_h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return (int(rng.integers(0, height - crop_h + 1)),
                    int(rng.integers(0, width - crop_w + 1)), crop_h, crop_w)
    crop_h, crop_w = height, width
    if width / height < CROP_ASPECT[0]:
        crop_h = int(round(width / CROP_ASPECT[0]))
    elif width / height > CROP_ASPECT[1]:
        crop_w = int(round(height * CROP_ASPECT[1]))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3 or 1) -> uint8 RGB (size, size, 3): a random-resized crop
    (`random_crop_box`), resized as `square_image` resizes, flipped left-right with
    probability 1/2."""
    top, left, h, w = random_crop_box(image.shape[0], image.shape[1], rng)
    crop = _resized(_rgb(image)[top:top + h, left:left + w], size)
    return np.ascontiguousarray(crop[:, ::-1]) if rng.random() < 0.5 else crop


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3), bilinear (antialiased when shrinking)."""
    from PIL import Image
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size),
                                                                          Image.BILINEAR))
