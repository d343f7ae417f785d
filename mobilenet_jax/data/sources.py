"""The split of a run's data, from wherever the run's Config says it lives."""
from typing import Callable, Optional

from mobilenet_jax.data import from_folder, from_tfds
from mobilenet_jax.data.arrays import Split
from mobilenet_jax.data.streaming import StreamedSplit


def load_split(config, split: str, data_dir: Optional[str] = None, offline: bool = False,
               say: Callable[[str], None] = print) -> Split | StreamedSplit:
    """A split of the run's data, its image folder or its TFDS dataset, held in memory or
    streamed as config.run.input says."""
    if config.places.image_folder:
        return from_folder.load(config.places.image_folder, split, config.data.resolution,
                                config.data.class_names if split != "train" else None, say,
                                config.run.input, config.run.data_workers)
    return from_tfds.load(config.data.dataset, split, data_dir or config.places.data_dir,
                          offline or config.places.offline, config.data.resolution,
                          config.run.input, config.run.data_workers, say)
