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
    from PIL import Image
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    square = centre_square(image)
    if square.shape[0] == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
