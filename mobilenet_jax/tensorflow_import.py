"""TensorFlow, imported only on the paths that need it (TFRecord files, downloads, TFLite).

Hiding the GPUs from it is the one process-wide change the library makes itself: TensorFlow
takes the memory of every GPU it sees at its first op, memory JAX's steps need, and only the
library knows when (and whether) TensorFlow is imported, so no command can do it beforehand.
"""
from typing import Callable


def import_tensorflow(missing: Callable[[], Exception]):
    """The `tensorflow` module with its GPUs hidden; `missing()` is raised where it is not
    installed."""
    try:
        import tensorflow as tf
    except ImportError:
        raise missing() from None
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # its GPUs already initialised (an earlier import): they stay as they are
        pass
    return tf
