"""BatchNorm statistics recomputed with a run's current weights ("precise BN", Wu & Johnson
2021, arXiv 2105.07576). The running statistics, and their moving average, lag weights that
change fast: without this a short run's evaluated model was at chance while its training was
near perfect (experiments/eval_statistics)."""
import dataclasses
import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp

from mobilenet_jax.config import Config
from mobilenet_jax.core.parallel import Devices
from mobilenet_jax.data import arrays
from mobilenet_jax.data.streaming import StreamedSplit


def recompute(state, split: arrays.Split | StreamedSplit, config: Config, devices: Devices,
              batch_statistics: Callable, base_rng: jax.Array, epoch: int):
    """The state with `precise_batch_stats` the mean of `batch_statistics` over
    `precise_bn_batches` training batches in `epoch`'s order (repeated where the split has
    fewer), each augmented by its own key: a function of the weights, the data, the seed
    and the epoch."""
    # A few batches: threads start at once, worker processes take seconds to start.
    if isinstance(split, StreamedSplit):
        split = dataclasses.replace(split, workers=0)
    batch_size = config.recipe.batch_size
    batches = itertools.chain.from_iterable(
        split.train_batches(batch_size, config.start.seed, epoch, 0, devices.process_index,
                            devices.process_count, config.data.random_resized_crops)
        for _ in range(-(-config.recipe.precise_bn_batches // (len(split) // batch_size))))
    rng = jax.random.fold_in(jax.random.split(base_rng)[1], epoch)
    total, count = None, 0
    for batch in itertools.islice(batches, config.recipe.precise_bn_batches):
        stats = batch_statistics(state, devices.global_batch(batch), jax.random.fold_in(rng, count))
        total = stats if total is None else _add(total, stats)
        count += 1
    return state.replace(precise_batch_stats=_divide(total, count))


# Jitted: op by op, each statistic's shape would compile an add and a division of its own.
_add = jax.jit(functools.partial(jax.tree.map, jnp.add))
_divide = jax.jit(lambda tree, n: jax.tree.map(lambda v: v / n, tree), static_argnums=1)
